"""Exceptions and warnings gradscope raises."""


class NoRecurrentModuleError(ValueError):
    """The watched model holds nothing gradscope knows how to watch."""


class GradscopeWarning(UserWarning):
    """Something was not measured (and why); training itself goes on untouched."""
