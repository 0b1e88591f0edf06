"""gradscope under torch.distributed, 2 gloo ranks on loopback (tests/distributed_worker.py):
rank 0's run folder holds the mean of each rank's own numbers, each rank's own numbers are a
single-process watch of its shard, rank 1 writes nothing, a rank that raises leaves no process
hanging; DataParallel and FSDP are refused at watch()."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

import gradscope
from gradscope.integrations.distributed import UnsupportedParallelError, reduce_rows

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT_S = 5  # the workers' process group timeout
ROW_KEY = ["step", "module", "cell", "call", "layer", "direction", "state", "t"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario, out, limit_s=90):
    started = time.monotonic()
    root = str(WORKER.parent.parent)  # this checkout's gradscope, not whichever is installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    done = subprocess.run([sys.executable, str(WORKER), scenario, str(free_port()), str(out)],
                          capture_output=True, text=True, timeout=limit_s, cwd=root, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    results = [json.loads((out / f"result{rank}.json").read_text()) for rank in (0, 1)]
    return results, time.monotonic() - started


def single_process_rows(saved):
    """Each step of a rank replayed alone: the same weights, the same shard, no process group."""
    sys.path.insert(0, str(WORKER.parent))
    from distributed_worker import Net  # noqa: E402

    model = Net()
    frames = []
    for step, (x, weights) in enumerate(zip(saved["inputs"], saved["weights"])):
        model.load_state_dict(weights)
        with gradscope.watch(model) as scope:
            model(x).backward()
        rows = scope.timesteps()
        frames.append(rows.assign(step=step))
    return pd.concat(frames, ignore_index=True)


def test_rank_0_writes_the_mean_of_each_ranks_own_numbers(tmp_path):
    results, _ = launch("ddp", tmp_path)
    assert all("error" not in r for r in results), results
    assert not any(r["forward_left"] for r in results)
    assert not (tmp_path / "run-rank1").exists()

    own = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    for saved in own:  # each rank's scope holds its own numbers: those of its shard alone
        expected = single_process_rows(saved)
        pd.testing.assert_frame_equal(saved["timesteps"], expected, rtol=1e-6, atol=0)

    run = gradscope.load(tmp_path / "run-rank0")
    assert run.meta["distributed"]["world_size"] == 2
    written = run.timesteps().set_index(ROW_KEY).sort_index()
    both = pd.concat([saved["timesteps"] for saved in own]).groupby(ROW_KEY)
    assert written.index.equals(both.size().sort_index().index)
    for column in ("grad_norm", "carried_norm", "direct_norm"):
        pd.testing.assert_series_equal(written[column], both[column].mean().sort_index(), rtol=1e-12)
    for column in ("nonfinite", "batch"):
        pd.testing.assert_series_equal(written[column], both[column].sum().sort_index(), check_dtype=False)
    # rank 1's sequences are shorter at step 1: the tail there is rank 0's alone
    tail = written.xs(1, level="step").xs(5, level="t")
    assert (tail["batch"] == 3).all()
    assert len(run.gates()) == len(own[0]["gates"])


def test_a_rank_that_raises_leaves_no_process_hanging(tmp_path):
    results, took = launch("raise", tmp_path)
    rank0, rank1 = results
    assert rank1["error"] == "RuntimeError: rank 1 fails in forward"
    # rank 0's step-1 collective gave up after the process group's timeout instead of waiting
    assert rank0["error"].startswith("RuntimeError: gradscope: rank 0 could not gather step 1's"), rank0
    assert TIMEOUT_S - 1 < rank0["waited_s"] < 3 * TIMEOUT_S
    assert not rank0["forward_left"] and not rank1["forward_left"]
    assert gradscope.load(tmp_path / "run-rank0").steps() == [0]
    assert took < 60


def test_reduce_keeps_a_nan_from_any_rank_and_weights_gates_by_count():
    base = dict(step=0, module="", cell="RNN_TANH", call=0, layer=0, direction="forward", state="h", t=0)
    ts = [pd.DataFrame([dict(base, batch=2, grad_norm=1.0, carried_norm=0.5, direct_norm=0.5, nonfinite=0,
                             finite_grad_norm=1.0)]),
          pd.DataFrame([dict(base, batch=2, grad_norm=float("nan"), carried_norm=1.5, direct_norm=0.5,
                             nonfinite=1, finite_grad_norm=3.0)])]
    out = reduce_rows("timesteps", ts).iloc[0]
    assert pd.isna(out["grad_norm"]) and out["carried_norm"] == 1.0 and out["nonfinite"] == 1
    assert out["finite_grad_norm"] == 2.0  # the finite sequences of both ranks
    gate = dict(step=0, module="", call=0, layer=0, direction="forward", gate="f", activation="sigmoid")
    gs = [pd.DataFrame([dict(gate, count=1, mean=0.2, low=0.0, high=0.0)]),
          pd.DataFrame([dict(gate, count=3, mean=0.6, low=1.0, high=0.0)])]
    out = reduce_rows("gates", gs).iloc[0]
    assert out["count"] == 4 and out["mean"] == pytest.approx(0.5) and out["low"] == pytest.approx(0.75)


def test_data_parallel_and_fsdp_are_refused_with_what_to_do():
    with pytest.raises(UnsupportedParallelError, match=r"DataParallel.*gradscope.watch\(model.module\)"):
        gradscope.watch(nn.DataParallel(nn.LSTM(2, 3)))
    fsdp = pytest.importorskip("torch.distributed.fsdp")

    class Sharded(fsdp.FullyShardedDataParallel):  # an instance without a process group
        def __init__(self):
            nn.Module.__init__(self)
            self.rnn = nn.LSTM(2, 3)

    with pytest.raises(UnsupportedParallelError, match="FSDP.*DistributedDataParallel"):
        gradscope.watch(nn.Sequential(Sharded()))


def test_ranks_at_different_steps_raise_on_every_rank(monkeypatch):
    from gradscope.integrations import distributed

    reducer = object.__new__(distributed.StepReducer)
    reducer.rank, reducer.world_size, reducer.writes = 0, 2, True

    def gather(out, mine):  # what all_gather_object gives when rank 1 is one step ahead
        out[0], out[1] = mine, (mine[0] + 1, mine[1])

    monkeypatch.setattr(distributed.dist, "all_gather_object", gather)
    with pytest.raises(RuntimeError, match=r"closed different steps at once \(\[3, 4\], by rank\)"):
        reducer(3, {})


def test_a_step_whose_rows_could_not_be_measured_still_joins_the_collective(monkeypatch):
    import gradscope.scope as scope_module

    model = nn.RNN(2, 3, batch_first=True)
    scope = gradscope.watch(model)
    joined = []
    scope._reducer = lambda step, tables: joined.append((step, dict(tables))) or tables

    def broken(step):
        raise ValueError("measurement failed")

    monkeypatch.setattr(scope_module, "timestep_and_gate_tables", broken)
    with pytest.warns(gradscope.GradscopeWarning, match="could not be recorded"):
        with scope:
            model(torch.randn(1, 4, 2))[0].sum().backward()
    assert joined == [(0, {})]
