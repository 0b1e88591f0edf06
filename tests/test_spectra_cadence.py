"""Which recorded steps get weight spectra: spectra_every="auto" (the default) gives every 50th
recorded step from the first and the last recorded step (at stop(), from the weights that step
used); a whole number or a schedule keeps its plain meaning."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import gradscope
from gradscope.spectra.cadence import AUTO_INTERVAL, SpectraCadence


def train(steps, every=1, spectra="inline", run_dir=None, **watch):
    """A small GRU trained with big SGD steps (the weights change visibly from step to step);
    returns the scope and each step's W_hh as the step used it."""
    torch.manual_seed(0)
    model = nn.GRU(3, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1))
    used = []
    with gradscope.watch(model, every=every, spectra=spectra, run_dir=run_dir, **watch) as scope:
        for _ in range(steps):
            used.append(model.weight_hh_l0.detach().clone())
            opt.zero_grad()
            model(x)[0].pow(2).sum().backward()
            opt.step()
    return scope, used


def spectra_steps(source):
    return sorted(int(s) for s in source.spectra()["step"].unique())


@pytest.mark.parametrize("spectra", ["inline", "background"])
def test_auto_gives_every_50th_recorded_step_and_the_last(spectra):
    scope, used = train(AUTO_INTERVAL + 7, spectra=spectra)
    assert scope.meta["spectra_every"] == "auto"
    assert spectra_steps(scope) == [0, AUTO_INTERVAL, AUTO_INTERVAL + 6]
    assert scope.steps() == list(range(AUTO_INTERVAL + 7))  # the gradients of every step
    # the last step's spectra are of the weights it used, not of those the optimizer left
    last = scope.spectra().query(f"step == {AUTO_INTERVAL + 6} and gate == 'all'")
    expected = np.linalg.svd(used[-1].double().numpy(), compute_uv=False)[0]
    np.testing.assert_allclose(last["sigma_max"].item(), expected, rtol=1e-12)
    after = np.linalg.svd(dict(scope.model.named_parameters())["weight_hh_l0"].detach().double().numpy(),
                          compute_uv=False)[0]
    assert abs(after - expected) > 1e-9 * expected  # the optimizer's step shows at this precision


def test_auto_counts_recorded_steps_not_step_numbers():
    scope, _ = train(2 * AUTO_INTERVAL * 3 + 5, every=3)
    recorded = scope.steps()
    assert recorded[:3] == [0, 3, 6]
    assert spectra_steps(scope) == [0, 3 * AUTO_INTERVAL, 6 * AUTO_INTERVAL, recorded[-1]]


def test_a_last_step_that_had_its_spectra_is_not_measured_twice():
    scope, _ = train(AUTO_INTERVAL + 1)
    assert spectra_steps(scope) == [0, AUTO_INTERVAL]
    assert len(scope.spectra().query(f"step == {AUTO_INTERVAL}")) == 4  # one row per GRU gate and "all"


def test_the_last_steps_spectra_reach_the_run_folder(tmp_path):
    scope, _ = train(3, run_dir=tmp_path / "run")
    run = gradscope.load(tmp_path / "run")
    assert spectra_steps(run) == spectra_steps(scope) == [0, 2]


@pytest.mark.parametrize("spectra_every,expected", [(1, [0, 1, 2, 3]), (2, [0, 2]),
                                                    (gradscope.schedules.linear(3, offset=1), [1])])
def test_a_number_or_a_schedule_picks_exactly_its_steps(spectra_every, expected):
    scope, _ = train(4, spectra_every=spectra_every)
    assert spectra_steps(scope) == expected


def test_a_word_other_than_auto_is_refused_with_what_to_pass():
    with pytest.raises(ValueError, match=r"spectra_every='sometimes'.*'auto'.*whole number"):
        gradscope.watch(nn.GRU(3, 4), spectra_every="sometimes")


def test_the_cadence_alone():
    cadence = SpectraCadence("auto")
    assert cadence.keeps_last
    due = [cadence.due(n) for n in range(2 * AUTO_INTERVAL + 1)]
    assert [n for n, d in enumerate(due) if d] == [0, AUTO_INTERVAL, 2 * AUTO_INTERVAL]
    assert cadence.finish() is None  # the last one was due
    cadence.due(1000)
    cadence.pass_over(1000, "job")
    assert cadence.finish() == (1000, "job") and cadence.finish() is None
    fixed = SpectraCadence(3)
    assert not fixed.keeps_last and [fixed.due(n) for n in range(4)] == [True, False, False, True]
