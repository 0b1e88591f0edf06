"""Import an optional package, or say which gradscope extra installs it."""

import importlib


def require(module: str, extra: str, feature: str):
    """``importlib.import_module(module)``, or an ImportError that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{feature} needs the {module.split('.')[0]!r} package, which is not installed: "
            f'pip install "gradscope[{extra}]"') from error
