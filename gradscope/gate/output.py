"""What ``gradscope check`` writes: the verdict table, the findings, JUnit XML, Markdown."""

import math
import xml.etree.ElementTree as ET

from gradscope.analysis.diagnosis import VERDICT_TABLE, evidence_lines, verdict_cells
from gradscope.analysis.diagnosis import verdict_table as summary_table
from gradscope.display import compact_part_label, fmt  # noqa: F401  (fmt: gradscope check's numbers)
from gradscope.gate.assertions import where
from gradscope.printable import printable

# the numbers a JUnit testcase prints beside its verdict
JUNIT_NUMBERS = ["gain", "horizon", "max_grad_norm", "verdict"]


def table_rows(diagnosis):
    """The verdict table as lists of display strings, one per module, layer and direction."""
    return verdict_cells(diagnosis.summary())


def verdict_table(diagnosis):
    """The terminal verdict table (the one ``str(diagnosis)`` shows)."""
    return summary_table(diagnosis.summary())


def verdict_line(diagnosis):
    from gradscope.analysis.diagnosis import count_findings

    state = "HEALTHY" if diagnosis.ok else "UNHEALTHY"
    if any(f.kind == "no_steps" for f in diagnosis.findings):
        state = "UNHEALTHY: nothing was measured"
    return f"gradscope check: {state} ({count_findings(diagnosis.findings)})"


def text_report(diagnosis, target=None):
    from gradscope.gate.assertions import describe_findings

    parts = [f"gradscope check {target}" if target else "gradscope check", "", verdict_table(diagnosis), ""]
    if diagnosis.findings:
        parts += [describe_findings(diagnosis, title="findings"), ""]
    parts.append(verdict_line(diagnosis))
    return "\n".join(parts)


def _key(module, layer, direction):
    layer = None if layer is None or (isinstance(layer, float) and math.isnan(layer)) else int(layer)
    return (module, layer, direction)


def _finding_text(finding):
    lines = [f"[{finding.severity}] {finding.kind}: {finding.message}"]
    if finding.advice:
        lines.append(f"advice: {finding.advice}")
    return "\n".join(lines + evidence_lines(finding.evidence))


def junit_tree(diagnosis, target="model"):
    """JUnit XML: one testcase per module, layer and direction; error findings are failures."""
    cases = {}  # key -> summary record (or None for a key only findings name)
    for record in diagnosis.summary().to_dict("records"):
        cases[_key(record.get("module"), record.get("layer"), record.get("direction"))] = record
    by_key = {}
    for finding in diagnosis.findings:
        key = _key(finding.module, finding.layer, finding.direction)
        cases.setdefault(key, None)
        by_key.setdefault(key, []).append(finding)

    suite = ET.Element("testsuite", name=f"gradscope check {target}")
    classname = f"gradscope.check.{getattr(diagnosis, 'name', None) or 'model'}"
    failures = 0
    for key, record in cases.items():
        module, layer, direction = key
        case = ET.SubElement(suite, "testcase", classname=classname, name=compact_part_label(*key), time="0")
        findings = by_key.get(key, [])
        errors = [f for f in findings if f.severity == "error"]
        if errors:
            failures += 1
            failure = ET.SubElement(
                case, "failure", message="; ".join(f.message for f in errors), type=",".join(f.kind for f in errors)
            )
            failure.text = "\n\n".join(_finding_text(f) for f in errors)
        out = []
        if record is not None:
            out.append(", ".join(f"{c}={fmt(record.get(c), digits=4)}" for c in JUNIT_NUMBERS))
        out += [_finding_text(f) for f in findings if f.severity != "error"]
        if out:
            ET.SubElement(case, "system-out").text = "\n".join(out)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    root = ET.Element("testsuites", name="gradscope check", tests=str(len(cases)), failures=str(failures), errors="0")
    root.append(suite)
    _printable_xml(root)
    return ET.ElementTree(root)


def _printable_xml(root):
    """XML 1.0 cannot hold most control characters (a parser rejects the whole file): show
    them as escapes in every attribute and text; line breaks stay in multi-line texts."""
    for element in root.iter():
        element.attrib.update({key: printable(value) for key, value in element.attrib.items()})
        if element.text:
            element.text = printable(element.text, keep_line_breaks=True)


def write_junit(diagnosis, path, target="model"):
    tree = junit_tree(diagnosis, target)
    ET.indent(tree)  # Python 3.9+
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _md(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_summary(diagnosis, target=None):
    """A GitHub step summary: verdict, table, findings with advice."""
    mark = "✅ healthy" if diagnosis.ok else "❌ unhealthy"
    lines = [f"### gradscope check{f' `{target}`' if target else ''}: {mark}", ""]
    rows = table_rows(diagnosis)
    if rows:
        lines.append("| " + " | ".join(title for _, title in VERDICT_TABLE) + " |")
        lines.append("|" + "|".join("---" for _ in VERDICT_TABLE) + "|")
        lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
        lines.append("")
    for f in diagnosis.findings:
        lines.append(f"- **{f.severity}** `{f.kind}` at `{where(f)}`: {_md(f.message)}")
        if f.advice:
            lines.append(f"  - advice: {_md(f.advice)}")
    lines.append("")
    return "\n".join(lines)
