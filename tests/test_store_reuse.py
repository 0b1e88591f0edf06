"""Running a script again with the same run_dir (issue 15 item 1): watch can replace or go on
with the run, every error names a keyword that exists, and the user's own files in the folder
are never written beside a run nor deleted."""

import pytest
import torch
from torch import nn

import gradscope
from gradscope.store import RunFormatError, RunWriter, load
from gradscope.store.synthetic import synthetic_meta, synthetic_step


def train(run_dir, steps=1, **options):
    torch.manual_seed(0)
    model = nn.GRU(2, 3)
    with gradscope.watch(model, run_dir=run_dir, **options) as scope:
        for _ in range(steps):
            out, _ = model(torch.randn(4, 2, 2))
            out.sum().backward()
    return scope


def test_a_second_run_is_refused_with_keywords_that_watch_takes(tmp_path):
    train(tmp_path / "run")
    with pytest.raises(RunFormatError) as info:
        train(tmp_path / "run")
    message = str(info.value)
    assert "overwrite=True" in message and "append=True" in message
    # what the message suggests works
    train(tmp_path / "run", steps=2, overwrite=True)
    assert load(tmp_path / "run").steps() == [0, 1]
    train(tmp_path / "run", steps=1, append=True)
    assert load(tmp_path / "run").steps() == [0, 1, 2]


def test_watch_rejects_unclear_requests(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        gradscope.watch(nn.GRU(2, 3), run_dir=tmp_path / "r", overwrite=True, append=True)
    with pytest.raises(ValueError, match="pass run_dir"):
        gradscope.watch(nn.GRU(2, 3), overwrite=True)


def test_a_folder_with_the_users_files_is_not_written_into(tmp_path):
    (tmp_path / "notes.txt").write_text("my notes")
    with pytest.raises(RunFormatError, match=r"not part of a gradscope run \(notes.txt\)"):
        train(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_replacing_a_run_never_deletes_the_users_files(tmp_path):
    run = tmp_path / "run"
    train(run)
    (run / "notes.txt").write_text("my notes on this run")
    with pytest.raises(RunFormatError, match="never deletes files it did not write"):
        train(run, overwrite=True)
    assert (run / "notes.txt").read_text() == "my notes on this run"
    assert load(run).steps() == [0]  # the refusal touched nothing
    # going on with the same run leaves the notes where they are
    train(run, append=True)
    assert load(run).steps() == [0, 1] and (run / "notes.txt").exists()


def test_a_report_rendered_into_the_run_folder_does_not_block_a_rerun(tmp_path):
    run = tmp_path / "run"
    with RunWriter(run, synthetic_meta("old")) as writer:
        writer.write_step(0, *synthetic_step(0))
    (run / "report").mkdir()  # what `gradscope report RUN_DIR` writes by default
    (run / ".DS_Store").write_text("")
    RunWriter(run, synthetic_meta("new"), overwrite=True).close()
    assert load(run).name == "new"
