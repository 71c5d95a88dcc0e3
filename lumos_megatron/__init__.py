"""lumos_megatron: Megatron-Core training system for Lumos-1-style autoregressive video generators.

Importing the package is cheap: megatron-core and the model code load only when a submodule that
needs them is imported.
"""

__version__ = "0.1.0"
