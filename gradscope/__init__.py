"""gradscope: exact per-timestep BPTT gradients for PyTorch RNN, GRU and LSTM models.

Only the public names of the contract (see README) live here. They are imported lazily so
that ``import gradscope`` stays cheap and a submodule's import error names that submodule.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "watch": "gradscope.scope",
    "Scope": "gradscope.scope",
    "NoRecurrentModuleError": "gradscope.errors",
    "GradscopeWarning": "gradscope.errors",
    "analyze": "gradscope.analysis",
    "Rules": "gradscope.analysis",
    "Finding": "gradscope.analysis",
    "Diagnosis": "gradscope.analysis",
    "load": "gradscope.store",
    "Run": "gradscope.store",
    "report": "gradscope.reporting",
    "compare": "gradscope.reporting",
    "check": "gradscope.gate.health_check",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in ("testing", "integrations", "schedules"):
        return import_module(f"gradscope.{name}")
    raise AttributeError(f"module 'gradscope' has no attribute {name!r}")


def __dir__():
    return __all__
