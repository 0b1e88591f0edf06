"""``every=`` takes a schedule ``step -> bool``; ``gradscope.schedules`` has ready ones."""

import json

import pytest
import torch
import torch.nn as nn

import gradscope
from gradscope import schedules


def recorded(schedule, upto):
    return [s for s in range(upto) if schedule(s)]


def test_schedules_is_reachable_from_the_package():
    import subprocess
    import sys

    code = "import gradscope; print(gradscope.schedules.linear(2)(4))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def test_linear_with_offset():
    assert recorded(schedules.linear(3), 10) == [0, 3, 6, 9]
    assert recorded(schedules.linear(4, offset=2), 15) == [2, 6, 10, 14]


def test_logarithmic_is_dense_early_and_sparse_late():
    chosen = recorded(schedules.logarithmic(0, 3, steps=20), 5000)
    assert chosen[:6] == [0, 1, 2, 4, 6, 8]  # floor(10 ** (3 k / 19)), k = 0, 1, ...; and 0
    assert chosen[-1] == 1000 and len(chosen) < 21
    gaps = [b - a for a, b in zip(chosen, chosen[1:])]
    assert gaps == sorted(gaps)  # never denser later
    assert not schedules.logarithmic(1, 2, init=False)(0)


@pytest.mark.parametrize("make,match", [
    (lambda: schedules.linear(0), "interval"),
    (lambda: schedules.linear(2.5), "interval"),
    (lambda: schedules.linear(2, offset=-1), "offset"),
    (lambda: schedules.logarithmic(2, 1), "end must be >= start"),
    (lambda: schedules.logarithmic(-1, 2), "start"),
    (lambda: schedules.logarithmic(0, 2, steps=0), "steps"),
    (lambda: schedules.logarithmic(0, 2, base=1), "base"),
    (lambda: schedules.logarithmic(0, float("nan")), "finite"),
    (lambda: schedules.logarithmic(0, 40), "lower end"),
])
def test_bad_schedule_arguments_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("every,match", [
    (lambda step: "yes", "True or False"),
    (lambda: True, "schedule\\(0\\) raised TypeError"),
    (0, "whole number >= 1"),
    (2.0, "whole number >= 1"),
])
def test_bad_every_is_a_clear_error(every, match):
    with pytest.raises((TypeError, ValueError), match=match):
        gradscope.watch(nn.RNN(3, 4), every=every)


def test_watch_records_the_steps_a_schedule_picks(tmp_path):
    model = nn.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    with gradscope.watch(model, every=schedules.logarithmic(0, 1, steps=4), run_dir=tmp_path / "run") as scope:
        for _ in range(12):
            model(x)[0].sum().backward()
    assert scope.steps_seen == 12
    assert scope.steps() == [0, 1, 2, 4, 10]
    assert gradscope.load(tmp_path / "run").steps() == [0, 1, 2, 4, 10]
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["every"].startswith("logarithmic(")


def test_a_plain_function_is_a_schedule():
    model = nn.RNN(3, 4)
    with gradscope.watch(model, every=lambda step: step in (1, 3)) as scope:
        for _ in range(5):
            model(torch.randn(4, 2, 3))[0].sum().backward()
    assert scope.steps() == [1, 3]
