"""Resolving a gradscope check TARGET, and the error that names what failed."""

import sys

import pytest
import torch

from gradscope.gate.targets import TargetError, load_target, split_target

GOOD = """
import torch
def make():
    model = torch.nn.RNN(2, 3)
    def step():
        model(torch.randn(4, 1, 2))[0].sum().backward()
    return model, step
not_a_function = 3
def raises():
    raise RuntimeError("no data here")
def one_thing():
    return torch.nn.RNN(2, 3)
def not_a_model():
    return "model", lambda: None
def not_a_step():
    return torch.nn.RNN(2, 3), 5
"""


@pytest.fixture
def target_file(tmp_path):
    path = tmp_path / "my_targets.py"
    path.write_text(GOOD)
    return path


def reason_of(spec):
    with pytest.raises(TargetError) as info:
        load_target(spec)
    return info.value.reason, str(info.value)


def test_file_target_gives_model_and_step(target_file):
    path_before, modules_before = list(sys.path), set(sys.modules)
    model, step = load_target(f"{target_file}:make")
    assert isinstance(model, torch.nn.RNN) and callable(step)
    assert sys.path == path_before
    assert not {m for m in set(sys.modules) - modules_before if m.startswith("_gradscope_target")}


def test_module_target_is_found_in_the_current_folder(target_file, monkeypatch):
    monkeypatch.chdir(target_file.parent)
    monkeypatch.delitem(sys.modules, "my_targets", raising=False)
    model, _ = load_target("my_targets:make")
    assert isinstance(model, torch.nn.RNN)
    sys.modules.pop("my_targets", None)


@pytest.mark.parametrize("spec", ["no_colon", ":fn", "module:"])
def test_malformed_target(spec):
    reason, text = reason_of(spec)
    assert reason == "bad target" and "MODULE:FUNCTION" in text


def test_missing_module():
    reason, text = reason_of("gradscope_no_such_module.sub:make")
    assert reason == "module not found" and "gradscope_no_such_module" in text


def test_module_whose_import_fails_is_not_called_missing(tmp_path, monkeypatch):
    (tmp_path / "broken_dep_target.py").write_text("import gradscope_no_such_dependency\n")
    monkeypatch.chdir(tmp_path)
    reason, text = reason_of("broken_dep_target:make")
    assert reason == "module failed to import" and "gradscope_no_such_dependency" in text


def test_missing_file(tmp_path):
    reason, text = reason_of(f"{tmp_path / 'nope.py'}:make")
    assert reason == "file not found" and "nope.py" in text


def test_missing_function_lists_what_is_there(target_file):
    reason, text = reason_of(f"{target_file}:mkae")
    assert reason == "function missing" and "'mkae'" in text and "make" in text


def test_attribute_that_is_not_a_function(target_file):
    assert reason_of(f"{target_file}:not_a_function")[0] == "function missing"


def test_function_that_raises(target_file):
    reason, text = reason_of(f"{target_file}:raises")
    assert reason == "function raised" and "no data here" in text


@pytest.mark.parametrize("name, words", [
    ("one_thing", "(model, step)"),
    ("not_a_model", "torch.nn.Module"),
    ("not_a_step", "not a callable"),
])
def test_bad_return_values(target_file, name, words):
    reason, text = reason_of(f"{target_file}:{name}")
    assert reason == "bad return value" and words in text


def test_split_uses_the_last_colon():
    assert split_target(r"C:\work\t.py:make") == (r"C:\work\t.py", "make")
