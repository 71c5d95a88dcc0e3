"""The one error type of the conversion tools."""


class ConversionError(ValueError):
    """Input that cannot be converted: the message is one line naming the key or file and, where
    there is one, what to do. The command-line tools exit with status 2 on it."""
