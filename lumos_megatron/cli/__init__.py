"""The command-line entry points (``lumos-*`` console scripts) and their one parser style."""
