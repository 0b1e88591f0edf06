"""A process killed by SIGKILL while it records leaves every step it reported closed loadable."""

import os
import signal
import subprocess
import sys
import textwrap
import warnings

import pandas.testing as pdt
import pytest

from gradscope.errors import GradscopeWarning
from gradscope.store import load
from gradscope.store.synthetic import synthetic_step

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

# Writes steps until killed, printing "closed N" once write_step(N) has returned.
CHILD = textwrap.dedent("""
    import sys
    from gradscope.store import RunWriter
    from gradscope.store.synthetic import synthetic_meta, synthetic_step

    modules = ("enc,\\"oder\\"", "dec")
    with RunWriter(sys.argv[1], synthetic_meta("child", modules)) as writer:
        for step in range(100000):
            tables, values = synthetic_step(step, modules=modules, T=60)
            writer.write_step(step, tables, values)
            print("closed", step, flush=True)
""")
MODULES = ('enc,"oder"', "dec")


def run_and_kill(run_dir, kill_after):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    closed = []
    try:
        for line in child.stdout:
            closed.append(int(line.split()[1]))
            if len(closed) >= kill_after:
                break  # the child is inside its next write_step (or about to enter it)
        os.kill(child.pid, signal.SIGKILL)
        rest, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    closed += [int(line.split()[1]) for line in rest.splitlines()]
    assert child.returncode == -signal.SIGKILL, err
    return closed


@pytest.mark.parametrize("kill_after", [2, 17])
def test_every_reported_step_survives_sigkill(tmp_path, kill_after):
    closed = run_and_kill(tmp_path / "run", kill_after)
    assert len(closed) >= kill_after
    with warnings.catch_warnings():
        # a step cut in half is dropped with a GradscopeWarning; nothing else may be said
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", GradscopeWarning)
        run = load(tmp_path / "run")
    steps = run.steps()
    assert set(closed) <= set(steps)
    # a step whose commit landed before the kill but whose "closed" line did not may load too,
    # and must then be whole; nothing beyond that one
    assert steps == list(range(len(steps))) and len(steps) <= len(closed) + 1
    for step in steps[:: max(1, len(steps) // 5)] + steps[-1:]:
        tables, _ = synthetic_step(step, modules=MODULES, T=60)
        for table, df in tables.items():
            pdt.assert_frame_equal(run.table(table, steps=[step]), df)


def test_step_torn_by_a_kill_between_rows_and_commit_is_dropped_with_a_warning(tmp_path):
    # the child dies inside write_step(4): its rows are on disk, its commit line is not
    child = CHILD.replace(
        "with RunWriter", textwrap.dedent("""
        import os, signal
        original = RunWriter._sync
        def dying_sync(self, fds):
            original(self, fds)
            if self._last_step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        RunWriter._sync = dying_sync
        with RunWriter""").strip("\n"))
    result = subprocess.run([sys.executable, "-c", child, str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout.split("\n")[-2] == "closed 3"
    with pytest.warns(GradscopeWarning, match=r"timesteps\.csv: \d+ bytes that no whole commit"):
        run = load(tmp_path / "run")
    assert run.steps() == [0, 1, 2, 3]
    tables, _ = synthetic_step(3, modules=MODULES, T=60)
    pdt.assert_frame_equal(run.timesteps(steps=[3]), tables["timesteps"])
    assert run.row_count("timesteps") == 4 * len(tables["timesteps"]) == len(run.timesteps())
