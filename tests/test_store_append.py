"""RunWriter(append=True): going on with a run (a Scope started again) after a clean stop or a crash."""

import warnings

import pandas as pd
import pandas.testing as pdt
import pytest

from gradscope.errors import GradscopeWarning
from gradscope.records import TABLES
from gradscope.store import RunFormatError, RunWriter, load
from gradscope.store.synthetic import synthetic_meta, synthetic_step


def write(path, steps, **kwargs):
    with RunWriter(path, synthetic_meta(kwargs.pop("name", "run")), **kwargs) as writer:
        for step in steps:
            writer.write_step(step, *synthetic_step(step, T=5))


def assert_holds(run, steps):
    assert run.steps() == steps
    for table in TABLES:
        want = pd.concat([synthetic_step(s, T=5)[0][table] for s in steps], ignore_index=True)
        pdt.assert_frame_equal(run.table(table), want)


def test_append_goes_on_with_the_run(tmp_path):
    write(tmp_path / "run", [0, 1, 2])
    write(tmp_path / "run", [3, 5], append=True, name="renamed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = load(tmp_path / "run")
    assert_holds(run, [0, 1, 2, 3, 5])
    assert run.name == "renamed"
    assert run.spectrum("rnn", step=1) is not None and run.spectrum("rnn", step=5) is not None


def test_append_after_a_crash_cuts_off_the_torn_step(tmp_path):
    write(tmp_path / "run", [0, 1])
    with open(tmp_path / "run" / "timesteps.csv", "ab") as f:
        f.write(b'2,"rnn","LSTM",0,0,"forward","h",0,8,0.5')  # step 2 died mid-row
    with open(tmp_path / "run" / "steps.jsonl", "ab") as f:
        f.write(b'{"step": 2, "files": {"time')
    with pytest.warns(GradscopeWarning, match="appending to run folder .* cut off .*torn line"):
        write(tmp_path / "run", [2, 3], append=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing loose is left behind
        assert_holds(load(tmp_path / "run"), [0, 1, 2, 3])


def test_append_needs_later_steps(tmp_path):
    write(tmp_path / "run", [0, 4])
    with RunWriter(tmp_path / "run", synthetic_meta(), append=True) as writer:
        with pytest.raises(ValueError, match="step 4 comes after step 4"):
            writer.write_step(4, *synthetic_step(4, T=5))


def test_append_to_a_fresh_folder_starts_a_run(tmp_path):
    write(tmp_path / "new", [0], append=True)
    assert_holds(load(tmp_path / "new"), [0])


def test_append_refuses_another_schema_and_conflicting_options(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "meta.json").write_text('{"schema": 7}')
    with pytest.raises(RunFormatError, match="schema 7"):
        RunWriter(tmp_path / "run", synthetic_meta(), append=True)
    with pytest.raises(ValueError, match="not both"):
        RunWriter(tmp_path / "other", synthetic_meta(), append=True, overwrite=True)
