"""Clear errors for folders that are not runs, runs gradscope cannot read, and bad writes."""

import json
import warnings

import pytest

from gradscope.records import frame
from gradscope.store import RunFormatError, RunWriter, load
from gradscope.store.synthetic import synthetic_meta, synthetic_step


def test_load_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run folder at"):
        load(tmp_path / "nowhere")


def test_load_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("hi")
    with pytest.raises(RunFormatError, match="is a file, not a run folder"):
        load(tmp_path / "file.txt")


def test_load_folder_that_is_not_a_run_names_runs_inside(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(RunFormatError, match="not a gradscope run folder") as info:
        load(tmp_path)
    assert "run folders inside" not in str(info.value)
    RunWriter(tmp_path / "runs" / "GRU", synthetic_meta()).close()
    with pytest.raises(RunFormatError, match=r"run folders inside it: .*runs/GRU"):
        load(tmp_path)
    assert issubclass(RunFormatError, ValueError)


def test_load_unknown_schema(tmp_path):
    RunWriter(tmp_path / "run", synthetic_meta()).close()
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    meta["schema"] = 2
    (tmp_path / "run" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RunFormatError, match="schema 2; this gradscope reads schema 1"):
        load(tmp_path / "run")


@pytest.mark.parametrize("text, match", [("{not json", "not valid JSON"),
                                         ('{"name": "x"}', 'no "schema" entry'),
                                         ("[1, 2]", 'no "schema" entry')])
def test_load_bad_meta(tmp_path, text, match):
    RunWriter(tmp_path / "run", synthetic_meta()).close()
    (tmp_path / "run" / "meta.json").write_text(text)
    with pytest.raises(RunFormatError, match=match):
        load(tmp_path / "run")


def test_load_table_file_from_another_tool(tmp_path):
    RunWriter(tmp_path / "run", synthetic_meta()).close()
    (tmp_path / "run" / "spectra.csv").write_text("a,b\n1,2\n")
    with pytest.raises(RunFormatError, match=r"spectra\.csv lacks the column"):
        load(tmp_path / "run")


def test_writer_refuses_an_existing_run_unless_told_to_overwrite(tmp_path):
    with RunWriter(tmp_path / "run", synthetic_meta("old")) as writer:
        tables, values = synthetic_step(0)
        writer.write_step(0, tables, values)
    with pytest.raises(RunFormatError, match="already holds a run .*name 'old'.*overwrite=True"):
        RunWriter(tmp_path / "run", synthetic_meta("new"))
    assert load(tmp_path / "run").steps() == [0]  # the refusal touched nothing

    RunWriter(tmp_path / "run", synthetic_meta("new"), overwrite=True).close()
    run = load(tmp_path / "run")
    assert run.name == "new" and run.steps() == []


def test_writer_refuses_a_run_of_another_schema(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "meta.json").write_text('{"schema": 7, "name": "future"}')
    with pytest.raises(RunFormatError, match="schema 7"):
        RunWriter(tmp_path / "run", synthetic_meta())


def test_writer_refuses_conflicting_files_but_not_others(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "timesteps.csv").write_text("someone else's data\n")
    with pytest.raises(RunFormatError, match=r"holds \['timesteps.csv'\]"):
        RunWriter(tmp_path / "a", synthetic_meta())
    assert (tmp_path / "a" / "timesteps.csv").read_text() == "someone else's data\n"

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".gitkeep").write_text("")  # hidden files do not count
    RunWriter(tmp_path / "b", synthetic_meta()).close()
    load(tmp_path / "b")

    (tmp_path / "c").write_text("a file")
    with pytest.raises(RunFormatError, match="is not a folder"):
        RunWriter(tmp_path / "c", synthetic_meta())


@pytest.mark.parametrize("meta, error, match", [
    ({"schema": 2}, ValueError, "writes schema 1"),
    ({"x": float("nan")}, ValueError, "JSON-serialisable"),
    ({"x": object()}, ValueError, "JSON-serialisable"),
    (["not", "a", "dict"], TypeError, "must be a dict"),
])
def test_writer_checks_meta(tmp_path, meta, error, match):
    with pytest.raises(error, match=match):
        RunWriter(tmp_path / "run", meta)
    assert not (tmp_path / "run" / "meta.json").exists()


def test_bad_write_step_calls_are_refused_and_leave_the_run_whole(tmp_path):
    tables, values = synthetic_step(0)
    ts = tables["timesteps"]
    with RunWriter(tmp_path / "run", synthetic_meta()) as writer:
        writer.write_step(0, tables, values)
        with pytest.raises(ValueError, match="missing \\['nonfinite'\\]"):
            writer.write_step(1, {"timesteps": ts.drop(columns="nonfinite").assign(step=1)})
        with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
            writer.write_step(1, {"timesteps": ts.assign(step=1, extra=1)})
        with pytest.raises(ValueError, match=r"has rows of step\(s\) \[0\]"):
            writer.write_step(1, {"timesteps": ts})
        with pytest.raises(ValueError, match="unknown table"):
            writer.write_step(1, {"timestep": ts.assign(step=1)})
        with pytest.raises(ValueError, match="missing values"):
            writer.write_step(1, {"timesteps": ts.assign(step=1, module=None)})
        with pytest.raises(ValueError, match="not a number"):
            writer.write_step(1, {"timesteps": ts.assign(step=1, t="x")})
        with pytest.raises(ValueError, match="lacks"):
            writer.write_step(1, {}, [{"step": 1}])
        with pytest.raises(ValueError, match="increasing order"):
            writer.write_step(0, {})
        with pytest.raises(TypeError, match="step must be an int"):
            writer.write_step("1", {})
        with pytest.raises(ValueError, match=">= 0"):
            writer.write_step(-1, {})
        writer.write_step(1, {"gates": frame("gates")})
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_step(2, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused calls wrote nothing, not even stray bytes
        run = load(tmp_path / "run")
    assert run.steps() == [0, 1] and len(run.timesteps()) == len(ts)
