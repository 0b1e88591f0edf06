"""The summary shows the numbers its verdict rests on, and a verdict that changes across recorded
steps is a finding (issue 12, item 8).

Synthetic tables follow the linear recursion of tests/test_analyze_units.py (the gain of a step is
its chain's factor, exactly); the real model is a linear-regime tanh RNN with W_hh = s*Q, whose
gain is s (the oracle of tests/test_analyze_oracles.py), with s changed between steps.
"""

import json
import math

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradscope
from gradscope.analysis import Rules, analyze
from gradscope.analysis.gain import horizon
from gradscope.analysis.verdict import verdict
from gradscope.reporting.html import number
from tests.test_analyze_oracles import orthogonal
from tests.test_analyze_units import FakeSource, chain, only


def steps_of(gains, T=60, **kwargs):
    return sum((chain(g, T=T, step=s, **kwargs) for s, g in enumerate(gains)), [])


def verdict_of_row(row, rules=Rules()):
    """The verdict the summary row's own numbers give."""
    return verdict(row["gain"], row["horizon"], row["max_grad_norm"], row["nonfinite"],
                   row["required_horizon"], rules)


# --- the summary's numbers are those of the step the verdict is taken from --------------------

def test_a_healthy_latest_step_shows_its_own_horizon_not_the_pooled_one():
    # the GRU of the issue: pooled horizon below the required one, latest step healthy
    d = analyze(FakeSource(steps_of([0.85] * 9 + [0.95])))
    row = d.summary().iloc[0]
    assert row["verdict"] == "healthy" and row["verdict_step"] == 9
    assert row["gain"] == pytest.approx(0.95, rel=1e-12)
    assert row["horizon"] == pytest.approx(horizon(0.95, 1e-3), rel=1e-12)
    assert row["horizon"] >= row["required_horizon"] == 60
    assert row["pairs"] == 59
    # the pooled numbers stay, named as such, and would say vanishing
    assert row["gain_pooled"] == pytest.approx(0.85 ** 0.9 * 0.95 ** 0.1, rel=1e-12)
    assert row["horizon_pooled"] < 60 and row["pairs_pooled"] == 10 * 59
    assert verdict_of_row(row) == row["verdict"]


def test_max_grad_norm_is_the_latest_steps_and_nonfinite_the_runs():
    rows = steps_of([1.0, 1.0], T=20)
    for r in rows:
        if r["step"] == 0:
            r["grad_norm"] *= 5.0
        if r["step"] == 0 and r["t"] == 19:
            r.update(grad_norm=math.nan, nonfinite=2)
    row = analyze(FakeSource(rows)).summary().iloc[0]
    assert row["max_grad_norm"] == pytest.approx(1.0)            # step 1
    assert row["max_grad_norm_pooled"] == pytest.approx(5.0)     # step 0
    assert row["nonfinite"] == 2 and row["verdict"] == "nonfinite"
    assert verdict_of_row(row) == "nonfinite"


def test_latest_step_without_a_gain_falls_back_to_the_pooled_numbers():
    rows = steps_of([0.5, 0.5]) + chain(0.9, T=1, step=2)   # step 2: one time step, no pair
    d = analyze(FakeSource(rows))
    row = d.summary().iloc[0]
    assert row["verdict"] == "vanishing" and row["verdict_step"] is pd.NA
    assert row["gain"] == row["gain_pooled"] == pytest.approx(0.5)
    assert "  all  " in str(d)          # the table says the numbers pool all steps
    json.dumps(d.to_dict(), allow_nan=False)
    assert d.to_dict()["summary"][0]["verdict_step"] is None
    assert number(row["verdict_step"]) == "–"     # the report's table cell


def test_terminal_table_names_the_step_beside_the_numbers():
    text = str(analyze(FakeSource(steps_of([0.85] * 3 + [0.95]))))
    header, _, row = text.splitlines()[2:5]  # header, its rule, the first row
    assert header.split()[4:7] == ["step", "gain", "horizon"]
    assert row.split()[4:7] == ["3", "0.95", "134.7"]
    assert row.split()[-1] == "healthy"


@settings(max_examples=60, deadline=None)
@given(gains=st.lists(st.sampled_from([0.2, 0.5, 0.85, 0.95, 1.0, 1.02, 1.3]),
                      min_size=1, max_size=6),
       last_unmeasured=st.booleans(), nan_at=st.one_of(st.none(), st.integers(0, 5)),
       min_horizon=st.sampled_from([None, 10.0, 200.0]))
def test_the_summary_verdict_follows_from_the_summary_numbers(gains, last_unmeasured, nan_at,
                                                              min_horizon):
    rows = steps_of(gains, T=30)
    if last_unmeasured:
        rows += chain(0.9, T=1, step=len(gains))
    if nan_at is not None and nan_at < len(gains):
        for r in rows:
            if r["step"] == nan_at and r["t"] == 29:
                r.update(grad_norm=math.inf, nonfinite=1)
    rules = Rules(min_horizon=min_horizon)
    row = analyze(FakeSource(rows), rules).summary().iloc[0]
    assert verdict_of_row(row, rules) == row["verdict"]


# --- verdict_flips ---------------------------------------------------------------------------

def test_verdicts_going_back_and_forth_are_a_warning_with_the_steps():
    d = analyze(FakeSource(steps_of([0.85, 0.95, 0.85, 0.95, 0.95, 0.85, 0.95])))
    f = only(d, "verdict_flips")
    assert f.severity == "warning"
    assert f.evidence["flips"] == 5 and f.evidence["flip_steps"] == [1, 2, 3, 5, 6]
    assert f.evidence["verdict_counts"] == {"vanishing": 3, "healthy": 4}
    assert f.evidence["latest_step"] == 6 and f.evidence["latest_verdict"] == "healthy"
    assert f.evidence["horizon_range"] == pytest.approx([horizon(0.85, 1e-3),
                                                        horizon(0.95, 1e-3)])
    assert f.evidence["required_horizon"] == 60
    assert "step 1: vanishing -> healthy; step 2: healthy -> vanishing" in f.evidence["changes"]
    assert "changed 5 time(s) over 7 recorded steps" in f.message
    assert d.summary().iloc[0]["flips"] == 5
    assert d.ok      # the latest step is healthy: a warning, not an error
    json.dumps(d.to_dict(), allow_nan=False)


def test_one_change_is_information_and_steady_verdicts_say_nothing():
    once = only(analyze(FakeSource(steps_of([1.0, 1.0, 0.7, 0.7]))), "verdict_flips")
    assert once.severity == "info" and once.evidence["flip_steps"] == [2]
    assert analyze(FakeSource(steps_of([0.7, 0.7, 0.7]))).by_kind("verdict_flips") == []
    assert analyze(FakeSource(steps_of([1.2, 1.3]))).by_kind("verdict_flips") == []


def test_steps_without_a_gain_are_skipped_not_counted_as_a_change():
    rows = chain(1.0, step=0) + chain(1.0, T=1, step=1) + chain(1.0, step=2)
    d = analyze(FakeSource(rows))
    assert list(d.per_step()["verdict"]) == ["healthy", "unknown", "healthy"]
    assert d.by_kind("verdict_flips") == [] and d.summary().iloc[0]["flips"] == 0


def test_each_part_is_judged_on_its_own_steps():
    rows = (steps_of([0.85, 0.95, 0.85], module="a")
            + steps_of([0.95, 0.95, 0.95], module="b"))
    found = analyze(FakeSource(rows)).by_kind("verdict_flips")
    assert [(f.module, f.evidence["flips"]) for f in found] == [("a", 2)]


# --- a real watched model --------------------------------------------------------------------

def test_real_rnn_whose_weight_scale_alternates_between_steps():
    """W_hh = s*Q in the linear regime has gain s exactly; s alternates 0.8 (horizon 31 < 60
    needed: vanishing) and 0.95 (horizon 135: healthy) from one step to the next; pooled, the
    gain is sqrt(0.8 * 0.95) = 0.87 (horizon 50: vanishing)."""
    T, H, B = 60, 16, 4
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.RNN(H, H, batch_first=True)
    q = orthogonal(H, generator)
    scales = [0.8, 0.95, 0.8, 0.95]
    with torch.no_grad():
        model.bias_hh_l0.zero_()
        model.bias_ih_l0.zero_()
    with gradscope.watch(model) as scope:
        for s in scales:
            with torch.no_grad():
                model.weight_hh_l0.copy_(s * q)
            x = 1e-3 * torch.randn(B, T, H, generator=generator)
            out, _ = model(x)
            out[:, -1].sum().backward()
    d = analyze(scope)
    per_step = d.per_step()
    assert per_step["gain"].tolist() == pytest.approx(scales, rel=0.02)
    assert list(per_step["verdict"]) == ["vanishing", "healthy"] * 2
    row = d.summary().iloc[0]
    assert row["verdict"] == "healthy" and row["verdict_step"] == 3
    assert row["gain"] == pytest.approx(0.95, rel=0.02)
    assert row["horizon"] > 60 > row["horizon_pooled"]
    assert verdict_of_row(row) == "healthy"
    f = only(d, "verdict_flips")
    assert f.severity == "warning" and f.evidence["flip_steps"] == [1, 2, 3]
