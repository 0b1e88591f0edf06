"""The public names of API.md are the functions and classes it describes, whatever was imported
first (a submodule named like a public function would shadow it)."""

import importlib
import subprocess
import sys

import gradscope
from gradscope.records import TABLES

API_TIMESTEP_COLUMNS = ["step", "module", "cell", "call", "layer", "direction", "state", "t", "batch",
                        "grad_norm", "carried_norm", "direct_norm", "nonfinite"]
API_SPECTRA_COLUMNS = ["step", "module", "layer", "direction", "gate", "rows", "cols", "sigma_max", "sigma_min",
                       "spectral_radius", "stable_rank", "frobenius"]


def test_every_submodule_imported_first_leaves_the_public_names_callable():
    code = (
        "import importlib, pkgutil, gradscope\n"
        "for m in pkgutil.walk_packages(gradscope.__path__, 'gradscope.'):\n"
        "    if not m.name.endswith(('__main__', 'pytest_plugin')):\n"
        "        importlib.import_module(m.name)\n"
        "names = ['watch', 'analyze', 'load', 'report', 'compare', 'check']\n"
        "bad = [n for n in names if not callable(getattr(gradscope, n))]\n"
        "assert not bad, bad\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_public_names_exist():
    for name in ("watch", "Scope", "NoRecurrentModuleError", "analyze", "Rules", "Finding", "Diagnosis", "load",
                 "Run", "report", "compare", "check"):
        assert getattr(gradscope, name) is not None
    assert issubclass(gradscope.NoRecurrentModuleError, ValueError)
    assert callable(importlib.import_module("gradscope.testing").assert_gradients_healthy)


def test_table_columns_are_the_contract():
    assert TABLES["timesteps"] == API_TIMESTEP_COLUMNS + ["finite_grad_norm"]  # gradscope's addition
    assert TABLES["spectra"] == API_SPECTRA_COLUMNS
    assert TABLES["jacobians"] == ["step", "module", "call", "layer", "direction", "t", "jac_norm"]
    assert TABLES["lyapunov"] == ["step", "module", "layer", "direction", "index", "exponent"]
