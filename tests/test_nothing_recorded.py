"""Zero recorded steps is its own state (issue 15 item 7): a scope whose block never ran
backward() is not OK, its findings name no layer it did not measure, and its report says that
nothing was measured."""

import re

import torch
from torch import nn

import gradscope


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(2, 3, num_layers=2)

    def forward(self, x):
        return self.rnn(x)[0]


def forward_only(run_dir=None):
    model = TwoLayers()
    with gradscope.watch(model, run_dir=run_dir) as scope:
        model(torch.randn(5, 2, 2))  # no backward(): no step closes
    return scope


def test_analyze_says_nothing_was_measured_and_is_not_ok():
    diagnosis = gradscope.analyze(forward_only())
    assert not diagnosis.ok
    (finding,) = diagnosis.findings
    assert (finding.kind, finding.severity) == ("no_steps", "error")
    assert (finding.module, finding.layer, finding.direction) == (None, None, None)
    assert "backward" in finding.message and finding.evidence["steps_seen"] == 0
    text = str(diagnosis)
    assert "NOT OK" in text and "the whole run" in text and "<root>" not in text


def test_a_run_folder_without_steps_is_not_ok(tmp_path):
    forward_only(tmp_path / "run")
    diagnosis = gradscope.analyze(tmp_path / "run")
    assert not diagnosis.ok and [f.kind for f in diagnosis.findings] == ["no_steps"]


def test_the_report_says_nothing_was_measured(tmp_path):
    page = gradscope.report(forward_only(), tmp_path / "report").read_text(encoding="utf-8")
    status = re.findall(r'<div class="status ([a-z]+)">([^<]*)</div>', page)
    assert status == [("bad", "Nothing was measured: no training step was recorded, so there is "
                              "no verdict.")]
    assert "Only one training step was recorded" not in page
    assert "no_steps in the whole run" in page and "layer 0" not in page
