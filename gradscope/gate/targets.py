"""Resolve a ``gradscope check`` TARGET (``package.module:function`` or ``path/file.py:function``)
into ``(model, step)``, with an error that says which part failed."""

import importlib
import importlib.util
import inspect
import os
import sys
from contextlib import contextmanager
from pathlib import Path


class TargetError(Exception):
    """The target could not be imported or run. ``reason`` is one of: bad target, module not
    found, module failed to import, file not found, function missing, function raised,
    bad return value, step raised, nothing recorded, no recurrent module."""

    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def split_target(spec):
    """``"a.b:fn"`` -> ("a.b", "fn"); the last colon splits, so ``C:\\x.py:fn`` works."""
    where, sep, function = spec.rpartition(":")
    if not sep or not where or not function:
        raise TargetError(
            "bad target",
            f"{spec!r} is not MODULE:FUNCTION or FILE.py:FUNCTION "
            "(e.g. examples/ci/gradient_targets.py:healthy_lstm)",
        )
    return where, function


def _is_path(where):
    return where.endswith(".py") or "/" in where or os.sep in where


@contextmanager
def _on_sys_path(directory):
    """Let the target import its neighbours, as ``python file.py`` / ``python -m`` would."""
    directory = str(directory)
    added = directory not in sys.path
    if added:
        sys.path.insert(0, directory)
    try:
        yield
    finally:
        if added and directory in sys.path:
            sys.path.remove(directory)


def _import_file(where):
    path = Path(where)
    if not path.is_file():
        raise TargetError("file not found", f"{where} (from {Path.cwd()})")
    name = f"_gradscope_target_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # registered while it runs (dataclasses and pickling look modules up there), then dropped
    sys.modules[name] = module
    try:
        with _on_sys_path(path.resolve().parent):
            spec.loader.exec_module(module)
    except Exception as error:
        raise TargetError("module failed to import", f"{where}: {type(error).__name__}: {error}") from error
    finally:
        sys.modules.pop(name, None)
    return module


def _import_module(where):
    try:
        with _on_sys_path(Path.cwd()):
            return importlib.import_module(where)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if where == missing or where.startswith(missing + "."):
            raise TargetError(
                "module not found",
                f"no module named {missing!r} (looked in the current folder and sys.path; "
                "for a file give its path: path/to/file.py:function)",
            ) from error
        raise TargetError("module failed to import", f"{where}: {type(error).__name__}: {error}") from error
    except Exception as error:
        raise TargetError("module failed to import", f"{where}: {type(error).__name__}: {error}") from error


def load_target(spec):
    """Import the target, call its function, and return its ``(model, step)``."""
    import torch

    where, function_name = split_target(spec)
    module = _import_file(where) if _is_path(where) else _import_module(where)
    function = getattr(module, function_name, None)
    if function is None:
        public = sorted(
            n for n, v in vars(module).items()
            if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_")
        )
        raise TargetError(
            "function missing",
            f"{where} has no function {function_name!r}"
            + (f" (it has: {', '.join(public)})" if public else ""),
        )
    if not callable(function):
        raise TargetError("function missing", f"{where}:{function_name} is a {type(function).__name__}, not a function")
    try:
        result = function()
    except Exception as error:
        raise TargetError("function raised", f"{spec}() raised {type(error).__name__}: {error}") from error
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise TargetError(
            "bad return value",
            f"{spec}() must return (model, step), got {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""),
        )
    model, step = result
    if not isinstance(model, torch.nn.Module):
        raise TargetError("bad return value", f"{spec}() returned a {type(model).__name__} as model, not a torch.nn.Module")
    if not callable(step):
        raise TargetError("bad return value", f"{spec}() returned a {type(step).__name__} as step, not a callable")
    return model, step
