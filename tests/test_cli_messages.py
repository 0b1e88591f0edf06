"""Each command's error lines speak of what that command takes (issue 15 items 3 and 5):
report a RUN_DIR, compare NAME=RUN_DIR, check a TARGET; never a Scope or a loaded run."""

import pytest

from gradscope.cli import main

PYTHON_ONLY = ("gradscope.load(", "a Scope", "cells=[model")


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "afile.txt"
    path.write_text("not a run\n")
    return path


def error_line(capsys):
    err = capsys.readouterr().err
    for words in PYTHON_ONLY:
        assert words not in err
    return err


def test_report_of_a_file_says_it_is_a_file(a_file, capsys):
    assert main(["report", str(a_file)]) == 2
    err = error_line(capsys)
    assert "is a file, not a run folder" in err and "does not exist" not in err
    assert err.startswith("gradscope report: RUN_DIR")


def test_report_of_a_missing_path_or_a_folder_without_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in error_line(capsys)
    assert main(["report", str(tmp_path)]) == 2
    assert "not a gradscope run folder" in error_line(capsys)


def test_compare_names_the_NAME_RUN_DIR_item_at_fault(a_file, tmp_path, capsys):
    assert main(["compare", f"A={a_file}", "--out", str(tmp_path / "out")]) == 2
    err = error_line(capsys)
    assert f"A={a_file}:" in err and "is a file, not a run folder" in err
    assert main(["compare", f"B={tmp_path}", "--out", str(tmp_path / "out")]) == 2
    assert f"B={tmp_path}:" in error_line(capsys)


def test_check_without_a_recurrent_module_speaks_of_TARGET(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.py").write_text(
        "import torch\n"
        "def make():\n"
        "    model = torch.nn.Linear(2, 2)\n"
        "    return model, lambda: model(torch.randn(3, 2)).sum().backward()\n")
    assert main(["check", "t.py:make"]) == 2
    err = error_line(capsys)
    assert "no recurrent module" in err and "the model TARGET returned (Linear)" in err


def test_the_python_api_also_says_a_file_is_not_a_run_folder(a_file, tmp_path):
    import gradscope

    with pytest.raises(ValueError, match="is a file, not a run folder"):
        gradscope.report(a_file, tmp_path / "out")
