"""The parts of a report page, built from RunData: verdicts, figures, tables, explanation.

Everything returned is HTML with every model- or user-given name escaped (``html.esc``).
"""

import re

import numpy as np
import pandas as pd

from gradscope.reporting import html
from gradscope.reporting.html import esc
from gradscope.reporting.plots.base import MAX_MODULES, module_label, part_label

EXCERPT_TIMES = 8     # time steps (columns) in the per-timestep excerpt
EXCERPT_PARTS = 12
SUMMARY_LABELS = {"gain": "gain (×/step)", "horizon": "horizon (steps)", "seq_len": "T",
                  "max_grad_norm": "max ‖grad‖", "sigma_max": "σ_max", "required_horizon": "needed horizon",
                  # gain, horizon and max ‖grad‖ are of the step the verdict comes from
                  "verdict_step": "at step", "gain_pooled": "gain, all steps",
                  "horizon_pooled": "horizon, all steps", "flips": "verdict changes"}
SUMMARY_HIDE = ("horizon_extrapolated", "method", "first_verdict", "last_verdict", "pairs",
                "max_grad_norm_pooled", "pairs_pooled",
                "flips", "steps")  # the verdict_flips finding and the facts line above say these
SUMMARY_FIRST = ("run", "module", "layer", "direction", "cell", "verdict", "verdict_step")  # the verdict stays in view


def run_facts(run):
    """One line: cells, recorded steps, sampling, mode."""
    modules = run.meta.get("modules") or {}
    cells = sorted({str(m.get("cell", "?")) for m in modules.values()}) or ["?"]
    steps = len(run.steps)
    span = f"steps {int(run.steps[0])}–{int(run.steps[-1])}" if steps else "no steps"
    bits = [f"{len(modules)} recurrent part(s): {', '.join(cells)}", f"{steps} recorded step(s) ({span})"]
    if run.meta.get("every"):
        bits.append(f"every {run.meta['every']} step(s)")
    if run.meta.get("mode"):
        bits.append(f"mode {run.meta['mode']}")
    return " · ".join(bits)


def status_line(run):
    findings = list(getattr(run.diagnosis, "findings", []))
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    if any(f.kind == "no_steps" for f in findings):
        words = "Nothing was measured: no training step was recorded, so there is no verdict."
        return f'<div class="status bad">{esc(words)}</div>'
    if getattr(run.diagnosis, "ok", True):
        words = "Healthy: no error-level gradient problem found."
        if counts["warning"]:
            words = f"No errors, but {counts['warning']} warning(s) to read."
        return f'<div class="status ok">{esc(words)}</div>'
    words = f"Problems found: {counts['error']} error(s), {counts['warning']} warning(s)."
    return f'<div class="status bad">{esc(words)}</div>'


def advice_html(advice):
    """The advice escaped, its code (between backticks, see Finding.code) set as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(advice))


def finding_card(finding, meta):
    if finding.module is None:  # about the whole run (no_steps)
        where = "the whole run"
    else:
        where = part_label(finding.module, finding.layer, finding.direction, meta)
    severity = html.css_token(finding.severity)
    advice = f'<p class="advice">{advice_html(finding.advice)}</p>' if finding.advice else ""
    return (f'<div class="finding {severity}"><div class="where"><span class="badge {severity}">'
            f'{esc(finding.severity)}</span>{esc(finding.kind)} in {esc(where)}</div>'
            f'<p class="message">{esc(finding.message)}</p>{html.evidence_list(finding.evidence)}{advice}</div>')


def verdicts(run):
    findings = list(getattr(run.diagnosis, "findings", []))
    cards = "".join(finding_card(f, run.meta) for f in findings)
    if not findings:
        cards = ('<p class="muted">No findings: the gradient neither vanishes nor explodes, stays '
                 "finite, and no gate is saturated under the current Rules.</p>")
    return status_line(run) + cards


def figures(figure_files, failures, notes=()):
    parts = [html.figure(f) for f in figure_files]
    if not figure_files:
        parts.append('<p class="note">No figure could be drawn: the source holds no recorded step.</p>')
    for note in notes:
        parts.append(f'<p class="note">{esc(note)}</p>')
    for failure in failures:
        parts.append(f'<p class="note">A figure failed and was left out: {esc(failure)}</p>')
    return "\n".join(parts)


def missing_notes(run):
    """Plain words for figures left out because their data was not recorded."""
    notes = []
    if not len(run.steps):  # the figures section already says there is nothing to draw
        return notes
    if run.spectra.empty:
        notes.append("No weight spectra were recorded, so the spectrum figures are left out.")
    if run.jacobians.empty and run.lyapunov.empty:
        notes.append("Jacobian norms and the Lyapunov spectrum were not recorded: "
                     "watch(model, jacobians=True) records them.")
    if len(run.steps) < 2:
        notes.append("Only one training step was recorded, so the figures over training are left out.")
    if len(run.modules()) > MAX_MODULES:
        notes.append(f"Per-module figures show the first {MAX_MODULES} of the {len(run.modules())} "
                     "recurrent parts; the tables list them all.")
    if len(run.sampled) < len(run.steps):
        notes.append(f"Figures over training show {len(run.sampled)} of the {len(run.steps)} recorded "
                     "steps, evenly spaced (first and last included).")
    return notes


def summary_frame(run):
    summary = run.summary.copy()
    if summary.empty:
        return summary
    summary = summary.drop(columns=[c for c in SUMMARY_HIDE if c in summary.columns])
    first = [c for c in SUMMARY_FIRST if c in summary.columns]
    summary = summary[first + [c for c in summary.columns if c not in first]]
    if "module" in summary:
        summary["module"] = summary["module"].map(module_label)
    return summary


def summary_table(run):
    summary = summary_frame(run)
    if summary.empty:
        return '<p class="muted">No summary: nothing was measured.</p>'
    return html.table(summary, labels=SUMMARY_LABELS)


def timestep_excerpt(run):
    """The last step's total norm at a few evenly spaced t, one row per part: the numbers
    behind the per-timestep curves, compact enough to read."""
    rows = run.last
    if rows.empty:
        return '<p class="muted">No per-timestep rows recorded.</p>'
    keys = ["module", "layer", "direction", "state"]
    ts = np.unique(rows["t"].to_numpy())
    picks = ts[np.unique(np.round(np.linspace(0, len(ts) - 1, min(EXCERPT_TIMES, len(ts)))).astype(int))]
    per_t = rows.groupby(keys + ["t"], sort=False)["grad_norm"].mean().unstack("t")
    table = per_t.reindex(columns=picks).head(EXCERPT_PARTS)
    table.columns = [f"t={t}" for t in picks]
    bad = rows.groupby(keys, sort=False)["nonfinite"].sum()
    table = table.reset_index()
    table["NaN/Inf"] = bad.reindex(pd.MultiIndex.from_frame(table[keys])).to_numpy()
    table["module"] = table["module"].map(module_label)
    step = int(rows["step"].max())
    more = f" (first {EXCERPT_PARTS} parts)" if len(per_t) > EXCERPT_PARTS else ""
    return (f'<p class="muted">Total gradient norm ‖∂L/∂state_t‖ at training step {step}, at '
            f"{len(picks)} evenly spaced time steps{more}; NaN/Inf counts sequence-steps with a "
            "non-finite gradient. The full table is <code>timesteps()</code> of the run.</p>"
            + html.table(table))


EXPLANATION = """
<p>For a recurrent layer <code>h_t = f(W_hx x_t + W_hh h_(t−1) + b)</code> with output
<code>o_t = W_qh h_t</code>, backpropagation through time gives the gradient at each time step as
the sum of two parts:</p>
<div class="math">∂L/∂h_t  =  (∂h_(t+1)/∂h_t)ᵀ · ∂L/∂h_(t+1)   +   W_qhᵀ · ∂L/∂o_t
             └──────── carried ────────┘     └──── direct ────┘</div>
<ul>
<li><b>carried</b>: what comes back from the next time step through the recurrence (from
<code>t−1</code> for the reverse direction of a bidirectional layer). It is a product of one-step
Jacobians, so it shrinks or grows geometrically.</li>
<li><b>direct</b>: what enters at step <code>t</code> itself, from the loss or from the layer above.</li>
<li><b>total</b>: their sum as vectors; plotted norms are batch means of the L2 norm, so
total ≤ carried + direct.</li>
<li><b>gain</b>: the geometric mean over <code>t</code> of carried<sub>t</sub> / total<sub>t+1</sub>,
the share of the gradient that survives one step back. It does not depend on where the loss
enters. After <code>k</code> steps back about gain<sup>k</sup> is left.</li>
<li><b>horizon</b>: how many steps back gain<sup>k</sup> stays above <code>Rules.horizon_ratio</code>
(10<sup>−3</sup> by default). A horizon shorter than the dependency you need to learn
(by default the sequence length) means <b>vanishing</b>; a gain above 1 + <code>Rules.exploding_eps</code>
or a norm above <code>Rules.max_grad_norm</code> means <b>exploding</b>.</li>
<li>For an LSTM the cell state <code>c</code> has its own rows (state <code>c</code>); its carried part
passes through the forget gate, which is why a forget gate near 1 keeps the gradient alive.</li>
<li>Weight spectra: for a tanh RNN, σ<sub>max</sub>(W_hh) &lt; 1 is enough for vanishing and
σ<sub>max</sub> &gt; 1 is needed for exploding (Pascanu, Mikolov &amp; Bengio 2013). Eigenvalues outside the
unit circle grow under repeated application. Lyapunov exponents (with <code>jacobians=True</code>)
measure the same growth along the actual trajectory: λ<sub>1</sub> &lt; 0 decays, &gt; 0 grows.</li>
</ul>
"""
