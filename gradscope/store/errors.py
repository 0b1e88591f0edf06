"""Errors about run folders."""


class RunFormatError(ValueError):
    """A folder is not a gradscope run, or one this gradscope cannot read or write into."""
