"""What ``gradscope check`` writes: the verdict table, the findings, JUnit XML, Markdown."""

import math
import xml.etree.ElementTree as ET

from gradscope.gate.assertions import where

TABLE_COLUMNS = ["module", "layer", "direction", "gain", "horizon", "max_grad_norm", "verdict"]


def fmt(value):
    """Numbers as people read them: 3 significant digits, ints as ints, NaN/None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "-"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if number.is_integer() and abs(number) < 1e6:
        return str(int(number))
    return f"{number:.3g}"


def _module_name(module):
    return "(root)" if module == "" else str(module)


def table_rows(diagnosis):
    """The verdict table as lists of display strings, one per module, layer and direction."""
    summary = diagnosis.summary()
    rows = []
    for record in summary.to_dict("records"):
        row = []
        for column in TABLE_COLUMNS:
            value = record.get(column)
            row.append(_module_name(value) if column == "module" else fmt(value))
        rows.append(row)
    return rows


def verdict_table(diagnosis):
    rows = table_rows(diagnosis)
    if not rows:
        return "(nothing measured)"
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(TABLE_COLUMNS)]
    numeric = {"layer", "gain", "horizon", "max_grad_norm"}

    def line(cells):
        return "  ".join(
            cell.rjust(w) if col in numeric else cell.ljust(w) for cell, w, col in zip(cells, widths, TABLE_COLUMNS)
        ).rstrip()

    return "\n".join([line(TABLE_COLUMNS), line(["-" * w for w in widths])] + [line(r) for r in rows])


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


def _evidence(evidence):
    """``key=value`` for the numbers, one line each for the sentences."""
    numbers, sentences = [], []
    for key, value in (evidence or {}).items():
        if isinstance(value, str) and " " in value:
            sentences.append(f"{key}: {value}")
        else:
            numbers.append(f"{key}={value if isinstance(value, (bool, str)) else fmt(value)}")
    return ([f"evidence: {', '.join(numbers)}"] if numbers else []) + sentences


def _finding_text(finding):
    lines = [f"[{finding.severity}] {finding.kind}: {finding.message}"]
    if finding.advice:
        lines.append(f"advice: {finding.advice}")
    return "\n".join(lines + _evidence(finding.evidence))


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
        parts = [_module_name(module) if module is not None else "(model)"]
        parts += [f"l{layer}"] if layer is not None else []
        parts += [direction] if direction else []
        case = ET.SubElement(suite, "testcase", classname=classname, name=" ".join(parts), time="0")
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
            out.append(", ".join(f"{c}={fmt(record.get(c))}" for c in TABLE_COLUMNS[3:]))
        out += [_finding_text(f) for f in findings if f.severity != "error"]
        if out:
            ET.SubElement(case, "system-out").text = "\n".join(out)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    root = ET.Element("testsuites", name="gradscope check", tests=str(len(cases)), failures=str(failures), errors="0")
    root.append(suite)
    return ET.ElementTree(root)


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
        lines.append("| " + " | ".join(TABLE_COLUMNS) + " |")
        lines.append("|" + "|".join("---" for _ in TABLE_COLUMNS) + "|")
        lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
        lines.append("")
    for f in diagnosis.findings:
        lines.append(f"- **{f.severity}** `{f.kind}` at `{where(f)}`: {_md(f.message)}")
        if f.advice:
            lines.append(f"  - advice: {_md(f.advice)}")
    lines.append("")
    return "\n".join(lines)
