"""gradscope.check and gradscope.testing.assert_gradients_healthy in Python."""

import importlib.util
from pathlib import Path

import pytest
import torch

import gradscope
from gradscope.gate.health_check import NothingRecordedError, check
from gradscope.testing import assert_gradients_healthy

_spec = importlib.util.spec_from_file_location(
    "gradient_targets", Path(__file__).resolve().parents[1] / "examples" / "ci" / "gradient_targets.py")
targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(targets)


def test_check_is_the_public_name():
    assert gradscope.check is check


def test_healthy_lstm_passes_and_returns_the_diagnosis():
    diagnosis = assert_gradients_healthy(*targets.healthy_lstm())
    assert diagnosis.ok
    assert set(diagnosis.summary()["verdict"]) == {"healthy"}


def test_vanishing_rnn_fails_with_vanish_in_the_message():
    with pytest.raises(AssertionError, match="vanish") as info:
        assert_gradients_healthy(*targets.vanishing_rnn())
    assert "advice:" in str(info.value)


def test_check_returns_the_verdicts():
    diagnosis = check(*targets.vanishing_rnn(), steps=2)
    assert not diagnosis.ok
    assert any(f.kind == "vanishing" and f.severity == "error" for f in diagnosis.findings)


def test_rules_as_a_mapping_or_rules():
    lenient = {"min_horizon": 3, "min_gain": 0.1}
    assert check(*targets.vanishing_rnn(), rules=lenient).ok
    assert check(*targets.vanishing_rnn(), rules=gradscope.Rules(**lenient)).ok
    with pytest.raises(ValueError, match="min_horizn"):
        check(*targets.vanishing_rnn(), rules={"min_horizn": 3})


def test_model_is_left_as_it_was():
    model, step = targets.vanishing_rnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check(model, step)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_step_without_backward_is_an_error_not_a_pass():
    model = torch.nn.LSTM(2, 3)
    with pytest.raises(NothingRecordedError, match="backward"):
        check(model, lambda: model(torch.randn(4, 1, 2)))


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_steps_must_be_a_positive_int(steps):
    with pytest.raises(ValueError, match="steps"):
        check(*targets.vanishing_rnn(), steps=steps)
