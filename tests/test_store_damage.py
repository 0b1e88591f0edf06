"""A torn or damaged run folder loads what is whole and says, in one warning, what it dropped."""

import json
import warnings

import pandas as pd
import pandas.testing as pdt
import pytest

from gradscope.errors import GradscopeWarning
from gradscope.records import TABLES
from gradscope.store import RunWriter, load
from gradscope.store.synthetic import synthetic_meta, synthetic_step

STEPS = [0, 1, 2, 3, 4]


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "run"
    with RunWriter(path, synthetic_meta("damaged", ("a,b", "c"))) as writer:
        for step in STEPS:
            tables, values = synthetic_step(step, modules=("a,b", "c"), T=9)
            writer.write_step(step, tables, values)
    return path


def expected(table, steps):
    frames = [synthetic_step(s, modules=("a,b", "c"), T=9)[0][table] for s in steps]
    return pd.concat(frames, ignore_index=True)


def assert_holds(run, steps):
    assert run.steps() == steps
    for table in TABLES:
        pdt.assert_frame_equal(run.table(table), expected(table, steps))


def commits(path):
    return [json.loads(line) for line in (path / "steps.jsonl").read_text().splitlines()]


def test_intact_run_loads_silently(run_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_holds(load(run_dir), STEPS)
        assert_holds(load(run_dir, verify=False), STEPS)


def test_partial_last_row_is_dropped(run_dir):
    torn = b'5,"a,b","LSTM",0,0,"forw'  # a row cut mid-field, never committed
    with open(run_dir / "timesteps.csv", "ab") as f:
        f.write(torn)
    with pytest.warns(GradscopeWarning, match=rf"timesteps\.csv: {len(torn)} bytes that no whole commit"):
        run = load(run_dir)
    assert_holds(run, STEPS)


def test_torn_commit_line_drops_its_step(run_dir):
    data = (run_dir / "steps.jsonl").read_bytes()
    last_line = data[data.rstrip(b"\n").rfind(b"\n") + 1:]
    (run_dir / "steps.jsonl").write_bytes(data[:-len(last_line) // 2])
    with pytest.warns(GradscopeWarning, match="torn line") as caught:
        run = load(run_dir)
    assert len(caught) == 1  # one warning that lists everything dropped
    message = str(caught[0].message)
    assert "loaded 4 whole step(s)" in message and "timesteps.csv" in message
    assert_holds(run, STEPS[:-1])


def test_garbage_tail_in_every_file_is_dropped(run_dir):
    for name in ["steps.jsonl", "values.jsonl"] + [f"{t}.csv" for t in TABLES]:
        with open(run_dir / name, "ab") as f:
            f.write(b"\x00\xff\xfe garbage \"unclosed,\n\x80\x81 {not json\n")
    with pytest.warns(GradscopeWarning, match="steps.jsonl line 6 is not a commit record"):
        run = load(run_dir)
    assert_holds(run, STEPS)
    assert run.spectrum("c", step=-1) is not None


def test_damaged_rows_in_the_middle_drop_that_step_everywhere(run_dir):
    start, end, _ = commits(run_dir)[2]["files"]["timesteps.csv"]
    with open(run_dir / "timesteps.csv", "r+b") as f:
        f.seek(start + 10)
        f.write(b"#GARBAGE#\n\xff")  # same length bytes overwritten: a flipped sector
    with pytest.warns(GradscopeWarning, match=r"step 2: its bytes in timesteps\.csv fail their checksum"):
        run = load(run_dir)
    assert_holds(run, [0, 1, 3, 4])
    with pytest.raises(KeyError):
        run.spectrum("c", step=2)


def test_corrupt_commit_line_in_the_middle_drops_only_that_step(run_dir):
    lines = (run_dir / "steps.jsonl").read_text().splitlines(keepends=True)
    lines[1] = '{"step": 1, "files": {"timesteps.csv": "oops"}}\n'
    (run_dir / "steps.jsonl").write_text("".join(lines))
    with pytest.warns(GradscopeWarning, match="line 2 is not a commit record"):
        run = load(run_dir)
    assert_holds(run, [0, 2, 3, 4])


def test_truncated_table_file_drops_the_steps_it_lost(run_dir):
    start, end, _ = commits(run_dir)[3]["files"]["gates.csv"]
    with open(run_dir / "gates.csv", "r+b") as f:
        f.truncate(start + (end - start) // 2)
    with pytest.warns(GradscopeWarning, match=r"step 3: its rows in gates\.csv end at byte .* \(truncated\)"):
        run = load(run_dir)
    # step 4's gates rows lie past the cut too
    assert_holds(run, [0, 1, 2])


def test_repeated_step_in_the_commit_log_is_dropped(run_dir):
    with open(run_dir / "steps.jsonl", "a") as f:
        f.write((run_dir / "steps.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.warns(GradscopeWarning, match="step 0: comes after step 4"):
        run = load(run_dir)
    assert_holds(run, STEPS)


def test_unverified_load_trusts_committed_bytes(run_dir):
    # verify=False skips the checksum pass: damage is then not caught by load() itself
    start, _, _ = commits(run_dir)[1]["files"]["lyapunov.csv"]
    with open(run_dir / "lyapunov.csv", "r+b") as f:
        f.seek(start)
        f.write(b"9")  # step 1 -> 9: still parses
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = load(run_dir, verify=False)
    assert 9 in set(run.lyapunov()["step"])
    with pytest.warns(GradscopeWarning, match="step 1: its bytes in lyapunov.csv fail"):
        load(run_dir)
