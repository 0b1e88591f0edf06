"""What gradscope check prints and writes, from a hand-made Diagnosis."""

import math
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pandas as pd

from gradscope.gate.output import fmt, markdown_summary, text_report, verdict_table, write_junit
from gradscope.testing import describe_findings


def finding(kind, severity, module, layer, direction, message, advice="do this"):
    return SimpleNamespace(kind=kind, severity=severity, module=module, layer=layer, direction=direction,
                           message=message, evidence={"gain": 0.3}, advice=advice)


class FakeDiagnosis:
    def __init__(self, rows, findings):
        self._rows, self.findings = rows, findings
        self.ok = not any(f.severity == "error" for f in findings)

    def summary(self):
        return pd.DataFrame(self._rows)


ROWS = [
    dict(module="rnn", layer=0, direction="forward", cell="RNN_TANH", verdict_step=3, gain=0.3, horizon=5.7,
         max_grad_norm=0.0123,
         nonfinite=0, sigma_max=0.3, verdict="vanishing"),
    dict(module="rnn", layer=0, direction="reverse", gain=0.97, horizon=math.inf, max_grad_norm=1.5,
         nonfinite=0, sigma_max=0.9, verdict="healthy"),
    dict(module="", layer=0, direction="forward", gain=math.nan, horizon=math.nan, max_grad_norm=2.0,
         nonfinite=0, sigma_max=1.0, verdict="unknown"),
]
SICK = FakeDiagnosis(ROWS, [
    finding("vanishing", "error", "rnn", 0, "forward", "gradient vanishes within 6 steps", "use an LSTM"),
    finding("saturation", "warning", "rnn", 0, "reverse", "tanh saturated"),
    finding("spectral_bound", "info", None, None, None, "a model-wide note"),
])
WELL = FakeDiagnosis(ROWS[1:2], [])


def test_numbers_are_readable():
    assert [fmt(v) for v in (0.012345, 3.0, math.inf, math.nan, None, "x", 1234567.0)] == [
        "0.0123", "3", "inf", "n/a", "n/a", "x", "1.23e+06"]


def test_check_output_and_str_diagnosis_share_one_verdict_table():
    from gradscope.analysis.diagnosis import verdict_table as summary_table

    assert verdict_table(SICK) == summary_table(SICK.summary())


def test_table_has_the_columns_and_one_row_per_part():
    lines = verdict_table(SICK).splitlines()
    assert lines[0].split() == ["module", "layer", "direction", "cell", "step", "gain", "horizon", "max_grad_norm",
                                "nonfinite", "sigma_max", "verdict"]
    assert len(lines) == 2 + len(ROWS)
    assert lines[2].split() == ["rnn", "0", "forward", "RNN_TANH", "3", "0.3", "5.7", "0.0123", "0", "0.3",
                                "vanishing"]
    assert lines[4].split()[0] == "(root)"


def test_text_report_lists_findings_with_advice_and_the_verdict():
    text = text_report(SICK, "t.py:make")
    assert "gradient vanishes within 6 steps" in text and "advice: use an LSTM" in text
    assert text.rstrip().endswith("UNHEALTHY (1 error(s), 1 warning(s), 1 info)")
    assert "HEALTHY (0 error(s), 0 warning(s), 0 info)" in text_report(WELL)


def test_the_findings_list_and_the_verdict_line_count_alike():
    # issue 15 item 4: "1 error(s), 2 finding(s)" above "1 error(s), 1 other finding(s)"
    lines = text_report(SICK, "t.py:make").splitlines()
    listed = next(line for line in lines if line.startswith("findings: ")).removeprefix("findings: ")
    assert lines[-1].endswith(f"({listed})")
    assert listed == "1 error(s), 1 warning(s), 1 info"


def test_findings_list_errors_first():
    lines = describe_findings(SICK).splitlines()
    assert lines[1].startswith("- [error] vanishing at rnn l0 forward")
    assert "(model)" in describe_findings(SICK)


def test_junit_has_one_case_per_part_and_failures_for_errors(tmp_path):
    path = tmp_path / "junit.xml"
    write_junit(SICK, path, "t.py:make")
    root = ET.parse(path).getroot()
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["rnn l0 forward", "rnn l0 reverse", "(root) l0 forward", "(model)"]
    failures = root.findall(".//testcase/failure")
    assert len(failures) == 1 and failures[0].get("type") == "vanishing"
    assert "use an LSTM" in failures[0].text and "vanishes" in failures[0].get("message")
    assert root.get("failures") == "1" and root.get("tests") == "4"
    assert "tanh saturated" in cases[1].find("system-out").text
    assert "evidence: gain=0.3" in failures[0].text
    assert cases[0].get("classname") == "gradscope.check.model"


def test_junit_of_a_healthy_model_has_no_failure(tmp_path):
    path = tmp_path / "junit.xml"
    write_junit(WELL, path)
    root = ET.parse(path).getroot()
    assert len(root.findall(".//testcase")) == 1 and not root.findall(".//failure")


def test_markdown_summary():
    text = markdown_summary(SICK, "t.py:make")
    assert text.startswith("### gradscope check `t.py:make`: ❌ unhealthy")
    assert ("| module | layer | direction | cell | step | gain | horizon | max_grad_norm | nonfinite | sigma_max "
            "| verdict |") in text
    assert "| rnn | 0 | forward | RNN_TANH | 3 | 0.3 | 5.7 | 0.0123 | 0 | 0.3 | vanishing |" in text
    assert "advice: use an LSTM" in text
    assert "✅ healthy" in markdown_summary(WELL)
