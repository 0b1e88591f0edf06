"""benchmarks/user_loop.py at a tiny size: its blocks line up with every=16's schedule (the
recorded step is each watched block's first), and it returns finite, positive ratios."""

import importlib.util
import math
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "user_loop.py"


def _load():
    spec = importlib.util.spec_from_file_location("user_loop", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
def test_blocks_line_up_with_the_schedule(cell):
    row = _load().measure(cell, batch=2, hidden=4, seq_len=3, rounds=2)
    for key in ("median", "mean", "recorded", "off"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    assert row["rounds"] == 2


def test_a_misaligned_block_is_refused(monkeypatch):
    module = _load()
    monkeypatch.setattr(module, "EVERY", 4)  # the watch records every 4th, the blocks take 4
    row = module.measure("RNN", batch=2, hidden=4, seq_len=3, rounds=1)
    assert row["rounds"] == 1
    real_watch = module.gradscope.watch
    monkeypatch.setattr(module.gradscope, "watch", lambda model, every: real_watch(model, every=every + 1))
    with pytest.raises(RuntimeError, match="not the blocks' first steps"):
        module.measure("RNN", batch=2, hidden=4, seq_len=3, rounds=2)
