"""``gradscope bench``: argument checks, help text, and the shape of its output on a tiny
configuration. Nothing here is timed: the numbers themselves are never asserted."""

import json
import sys

import pytest
import torch

from gradscope.bench import NOT_AVAILABLE, _faults, median_interval, parse_sizes
from gradscope.cli import build_parser, main


def run_cli(capsys, *argv):
    try:
        code = main(["bench", *argv])
    except SystemExit as stop:  # argparse's own checks
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


BAD = [
    (["--cells", "RNN,TRANSFORMER"], "unknown cell 'TRANSFORMER'"),
    (["--cells", ","], "unknown cell"),
    (["--sizes", "32x256"], "is not BxHxT"),
    (["--sizes", "0x8x8"], "is not BxHxT"),
    (["--repeat", "0"], "--repeat"),
    (["--repeat", "seven"], "--repeat"),
    (["--repeat", "9", "--max-repeat", "8"], "--max-repeat (8) is below --repeat (9)"),
    (["--tolerance", "1.5"], "--tolerance"),
    (["--budget", "-1"], "--budget"),
    (["--layers", "0"], "--layers"),
    (["--device", "tpu"], "is not cpu or cuda"),
]


@pytest.mark.parametrize("argv,says", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, says):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradscope bench: error:") and says in lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_cuda_says_so(capsys):
    code, _, err = run_cli(capsys, "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err and "--device cpu" in err


def test_help_gives_every_default():
    parser = build_parser()
    bench = parser._subparsers._group_actions[0].choices["bench"]
    flags = [a for a in bench._actions if a.option_strings and a.dest != "help"]
    assert {"--cells", "--sizes", "--repeat", "--max-repeat", "--tolerance", "--budget", "--device",
            "--threads", "--layers", "--seed", "--json"} <= {f.option_strings[0] for f in flags}
    for action in flags:
        assert "default" in action.help, action.option_strings


def test_tiny_run_prints_one_row_per_cell_and_writes_json(capsys, tmp_path):
    target = tmp_path / "bench.json"
    code, out, err = run_cli(capsys, "--cells", "RNN,LSTM", "--sizes", "small", "--repeat", "1",
                             "--max-repeat", "1", "--json", str(target))
    assert code == 0, err
    lines = out.splitlines()
    header = lines[1].split()
    assert header[:5] == ["cell", "B", "H", "T", "plain"]
    for title in ("exact", "fast", "every=16", "off-sched", "hand", "mem"):
        assert title in lines[1]
    rows = json.loads(target.read_text())
    assert [r["cell"] for r in rows] == ["RNN", "LSTM"]
    for row, line in zip(rows, lines[2:4]):
        assert line.split()[:4] == [row["cell"], "4", "8", "12"]
        assert row["rounds"] == 1
        for name in ("exact", "every16", "off", "loop", "exact_memory", "loop_memory"):
            assert row[name] > 0
        assert row["exact_halfwidth"] is None  # one round bounds nothing: printed as ±?
        if sys.platform.startswith("linux"):  # page faults counted (resource.getrusage)
            assert isinstance(row["plain_faults"], (int, float)) and row["plain_faults"] >= 0
            assert line.split()[-2:] == [_faults(row["plain_faults"]), _faults(row["fast_faults"])]
    assert "flt plain" in lines[1] and any(line.startswith("flt: minor page faults") for line in lines)
    if not rows[0]["fast_available"]:
        assert f"fast: {NOT_AVAILABLE}" in out and rows[0]["fast_memory"] is None


def test_sizes_and_interval_helpers():
    assert parse_sizes("small") == [(4, 8, 12)]
    assert parse_sizes("32x256x200, 2x3x4") == [(32, 256, 200), (2, 3, 4)]
    mid, width = median_interval([1.0] * 9)
    assert mid == 1.0 and width == 0.0
    assert median_interval([1.0, 2.0])[1] == float("inf")
    mid, width = median_interval([0.9, 1.0, 1.1] * 10)
    assert mid == 1.0 and width == pytest.approx(0.1)


def test_memory_counts_what_a_scope_keeps_in_its_pool():
    """A watched case's buffer pool is resident before its step starts and used by it: the peak
    counts it (else the fast LSTM read 0.57x of the plain step's memory)."""
    from gradscope.bench import _Cases, _peak_memory

    torch.manual_seed(0)
    model = torch.nn.LSTM(64, 64)
    cases = _Cases(model, torch.randn(200, 32, 64))  # (N, H) buffers of 1.6 MB: pooled
    try:
        for step in cases.steps.values():
            step.step()
        held = cases.pooled_bytes("fast")
        assert held > 1 << 20 and cases.pooled_bytes("plain") == 0
        memory, _ = _peak_memory(cases, list(cases.steps), "cpu")
        assert memory["fast"] >= held
    finally:
        cases.close()
