"""HTML building blocks: one self-contained page (inline CSS, no script, no network).

Every piece of text that can come from the model or the user goes through ``esc``; the
helpers here escape what they are given, so callers pass plain strings.
"""

import html

import numpy as np
import pandas as pd

from gradscope.printable import printable
from gradscope.display import fmt

CSS = """
:root { --fg:#1d1d1f; --muted:#5f6368; --line:#dadce0; --bg:#ffffff; --soft:#f6f8fa;
        --ok:#1e7e34; --warn:#a15c00; --err:#b3261e; --info:#1a5fb4; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:var(--bg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; overflow-wrap:anywhere; }
h2 { font-size: 20px; margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 8px; overflow-wrap:anywhere; }
p.sub, .muted { color: var(--muted); }
nav a { margin-right: 14px; color: var(--info); text-decoration: none; }
.status { border-radius: 8px; padding: 12px 16px; margin: 12px 0; font-weight: 600; border: 1px solid; }
.status.ok { background:#e6f4ea; border-color:#a8dab5; color: var(--ok); }
.status.bad { background:#fce8e6; border-color:#f5b7b1; color: var(--err); }
.finding { border: 1px solid var(--line); border-left: 6px solid var(--muted); border-radius: 6px;
           padding: 10px 14px; margin: 10px 0; background: var(--bg); }
.finding.error { border-left-color: var(--err); }
.finding.warning { border-left-color: var(--warn); }
.finding.info { border-left-color: var(--info); }
.finding .where { color: var(--muted); font-size: 13px; overflow-wrap:anywhere; }
.finding .message { margin: 4px 0; font-weight: 600; overflow-wrap:anywhere; }
.finding .advice { margin: 6px 0 0; overflow-wrap:anywhere; }
.finding .advice::before { content: "What to do: "; font-weight: 600; }
.evidence { margin: 6px 0 0; font-size: 13px; color: var(--muted); }
.chip { display: inline-block; background: var(--soft); border-radius: 4px; padding: 1px 7px;
        margin: 2px 6px 2px 0; white-space: nowrap; }
.chip code, .evidence-line code { color: var(--fg); }
.evidence details { display: inline; } .evidence summary { cursor: pointer; display: inline; color: var(--info); }
.evidence-line { margin: 4px 0 0; font-size: 13px; color: var(--muted); overflow-wrap:anywhere; }
.badge { display:inline-block; font-size: 12px; font-weight: 700; padding: 1px 8px; border-radius: 10px;
         color:#fff; background: var(--muted); margin-right: 6px; text-transform: uppercase; }
.badge.error { background: var(--err); } .badge.warning { background: var(--warn); }
.badge.info { background: var(--info); }
.runs { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; }
.runs > div { min-width: 0; }
figure { margin: 18px 0 28px; }
figure img { display:block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 14px; margin-top: 6px; max-width: 900px; }
figcaption b { color: var(--fg); }
.table-wrap { overflow-x: auto; margin: 8px 0 20px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: right; white-space: nowrap; }
/* headers wrap between words (a number column is as wide as its numbers, not its name), so a
   summary of many columns fits the page instead of hiding its last ones behind a scroll bar */
th { background: var(--soft); position: sticky; top: 0; white-space: normal; vertical-align: bottom;
     overflow-wrap: normal; }
td.text, th.text { text-align: left; max-width: 240px; overflow: hidden; text-overflow: ellipsis; }
td.verdict-healthy { color: var(--ok); font-weight: 600; }
td.verdict-vanishing, td.verdict-exploding, td.verdict-nonfinite { color: var(--err); font-weight: 600; }
td.verdict-unknown { color: var(--warn); font-weight: 600; }
.math { font-family: ui-monospace, Menlo, Consolas, monospace; background: var(--soft); padding: 10px 14px;
        border-radius: 6px; white-space: pre-wrap; overflow-x: auto; }
.note { background: var(--soft); border-radius: 6px; padding: 8px 12px; color: var(--muted); }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""


def esc(value):
    """Text for the page: control characters as visible escapes, then HTML-escaped."""
    return html.escape(printable(value), quote=True)


def number(value):
    """Numbers for tables: whole numbers as they are, others to 4 significant digits, inf as ∞,
    missing (NaN, None, pd.NA: the summary's verdict_step) as –."""
    return fmt(value, digits=4, unicode=True)


def table(df, columns=None, labels=None):
    """An escaped HTML table of ``df``: text left, numbers right, verdicts coloured."""
    columns = list(columns or df.columns)
    labels = labels or {}
    head = "".join(f'<th class="{_kind(df, c)}">{esc(labels.get(c, c))}</th>' for c in columns)
    body = []
    for record in df[columns].itertuples(index=False, name=None):
        cells = []
        for column, value in zip(columns, record):
            css = _kind(df, column)
            if column == "verdict":
                css += f" verdict-{css_token(value)}"
            cells.append(f'<td class="{css}" title="{esc(value)}">{esc(number(value))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _kind(df, column):
    return "num" if pd.api.types.is_numeric_dtype(df[column]) and not pd.api.types.is_bool_dtype(df[column]) else "text"


def css_token(value):
    return "".join(ch for ch in str(value).lower() if ch.isalnum() or ch == "-")[:20]


def evidence_list(evidence, shown=8):
    """A finding's evidence: numbers as compact ``name value`` chips (the first ``shown`` in
    view, the rest behind a native <details> toggle), sentences as their own lines."""
    if evidence is None or (hasattr(evidence, "__len__") and len(evidence) == 0):
        return ""
    if not isinstance(evidence, dict):
        evidence = {"evidence": evidence}
    sentences = {k: v for k, v in evidence.items() if isinstance(v, str) and " " in v}
    numbers = [(k, v) for k, v in evidence.items() if k not in sentences]
    chips = [f'<span class="chip"><code>{esc(k)}</code> {esc(_short(v))}</span>' for k, v in numbers]
    out = '<div class="evidence">' + "".join(chips[:shown])
    if len(chips) > shown:
        out += (f"<details><summary>{len(chips) - shown} more numbers</summary>"
                + "".join(chips[shown:]) + "</details>")
    out += "</div>"
    out += "".join(f'<p class="evidence-line"><code>{esc(k)}</code>: {esc(v)}</p>' for k, v in sentences.items())
    return out


def _short(value, limit=12):
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(value)
        text = ", ".join(number(v) for v in values[:limit])
        return f"[{text}{', …' if len(values) > limit else ''}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in list(value.items())[:limit]) + "}"
    return number(value)


def figure(fig_file):
    return (f'<figure><img src="{esc(fig_file.href)}" alt="{esc(fig_file.title)}">'
            f"<figcaption><b>{esc(fig_file.title)}.</b> {esc(fig_file.caption)}</figcaption></figure>")


def page(title, body):
    """The whole document: ``title`` is plain text (escaped here), ``body`` ready HTML."""
    from gradscope import __version__

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            # forbid every network fetch: the page and its PNGs live in one folder
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "img-src 'self'; style-src 'unsafe-inline'\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n"
            f"<footer>Written by gradscope {esc(__version__)}. Opens offline: no scripts, "
            "no fonts or files from the network.</footer>\n</main></body></html>\n")
