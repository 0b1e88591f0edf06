"""The demo's own section of the comparison page: task loss against the trivial baseline, and
per model the gain and horizon next to it, so the page shows cause (gradient) and effect (loss).
"""

import html
import math

from gradscope.display import steps_back

# a model "learned" once its mean training loss over a recorded window is this share of the baseline
LEARNED = 0.9
_START, _END = "<!-- gradscope demo: task section -->", "<!-- end of gradscope demo task section -->"


def task_section(results):
    """HTML for ``results`` (the dict ``run_demo`` returns)."""
    task, training = results["task"], results["training"]
    baseline = task["baseline"]
    rows = "".join(_row(m, baseline) for m in results["models"])
    head = "".join(f"<th>{_esc(h)}</th>" for h in (
        "model", "parameters", f"held-out {task['loss_name']}", "÷ baseline", "beats baseline",
        "gain (×/step)", "horizon (steps)", "gain, last step", "horizon, last step", "verdict"))
    return (
        f'<section id="task"><h2>Task loss against the trivial baseline</h2>'
        f"<p>Task <b>{_esc(task['task'])}</b>, sequence length T = {task['seq_len']}. "
        f"Trivial baseline: {_esc(task['loss_name'])} {baseline:.4f}, from the best guess that ignores "
        f"the sequence ({_esc(task['baseline_note'])}). A model below it carried information across time.</p>"
        f"<p class=\"muted\">Each model: one recurrent layer of hidden size {training['hidden']} and a linear "
        f"read-out, {training['steps']} steps of {_esc(training['optimizer'])} (lr {training['lr']:g}, batch "
        f"{training['batch_size']}, gradient norm clipped at {training['clip_grad_norm']:g}), seed "
        f"{training['seed']}, recorded every {results['every']} steps. Loss on a held-out batch of 512 after "
        "training. Gain and horizon: over all recorded steps, and at the last recorded step.</p>"
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
        f"<p>{_esc(reading(results))}</p>{_figure(results)}"
        f"<ul>{''.join(f'<li>{_esc(line)}</li>' for line in story(results))}</ul></section>")


def reading(results):
    """One sentence that says what the numbers show."""
    models = results["models"]
    if not models:
        return ""
    shortest = min(models, key=lambda m: _order(m["horizon_end"]))
    longest = max(models, key=lambda m: _order(m["horizon_end"]))
    text = (f"At the end of training the {shortest['model']}'s gradient falls to 1/1000 of its size "
            f"within {_steps(shortest['horizon_end'])} steps back; the {longest['model']}'s reaches "
            f"{_steps(longest['horizon_end'])} steps back")
    if math.isfinite(longest["horizon_end"]) and longest["horizon_end"] > results["task"]["seq_len"]:
        text += f", beyond the whole sequence of {results['task']['seq_len']}"
    return text + "."


def story(results):
    """Per model: when (if ever) its loss got clearly below the baseline, and what its horizon did."""
    baseline = results["task"]["baseline"]
    lines = []
    for m in results["models"]:
        history = m.get("history") or []
        if not history:
            continue
        learned = next((i for i, h in enumerate(history) if h["train_loss"] < LEARNED * baseline), None)
        name = m["model"]
        if learned is None:
            horizons = [h["horizon"] for h in history]
            lines.append(f"{name}: its training loss never got {_share()} below the baseline; its horizon "
                         f"stayed between {_steps(min(horizons, key=_order))} and "
                         f"{_steps(max(horizons, key=_order))} steps.")
        elif learned == 0:
            lines.append(f"{name}: its training loss was {_share()} below the baseline from the first recorded "
                         f"steps; horizon {_steps(history[0]['horizon'])} steps at step {history[0]['step']}.")
        else:
            before, after = history[learned - 1], history[learned]
            longest = max(history[:learned + 1], key=lambda h: _order(h["horizon"]))
            window = f"{after['step']}-{after['step'] + results['every'] - 1}"
            line = (f"{name}: its training loss first got {_share()} below the baseline in steps "
                    f"{window} (mean over the window); its horizon was {_steps(before['horizon'])} steps at step "
                    f"{before['step']} and {_steps(after['horizon'])} at step {after['step']}")
            if longest is not before and longest is not after:
                line += f" (longest until then: {_steps(longest['horizon'])} steps at step {longest['step']})"
            lines.append(line + ".")
    return lines


def _share():
    return f"{1 - LEARNED:.0%}"


def insert_section(index_html, section):
    """Put ``section`` right after the page header of ``index_html``; a section put there
    before is replaced, so the page holds one."""
    text = index_html.read_text(encoding="utf-8")
    block = f"{_START}\n{section}\n{_END}"
    if _START in text and _END in text:
        start, end = text.index(_START), text.index(_END) + len(_END)
        text = text[:start] + block + text[end:]
    else:
        at = _after_header(text)
        text = text[:at] + "\n" + block + "\n" + text[at:]
    index_html.write_text(text, encoding="utf-8")


def _after_header(text):
    for anchor in ("</header>", "<main>"):
        at = text.find(anchor)
        if at >= 0:
            return at + len(anchor)
    at = text.rfind("</body>")
    return at if at >= 0 else len(text)


def _figure(results):
    if not results.get("figure"):
        return ""
    return (f'<figure><img src="{_esc(results["figure"])}" alt="training loss and gradient horizon per model">'
            "<figcaption><b>Task loss and horizon over training.</b> Left: training loss (moving mean) "
            "against the trivial baseline (dashed). Right: the gradient horizon at each recorded step "
            f"against the sequence length (dashed); a horizon shorter than T = {results['task']['seq_len']} "
            "means the gradient from the loss fades out before it reaches the start of the sequence.</figcaption></figure>")


def _row(m, baseline):
    ratio = m["eval_loss"] / baseline if baseline else math.nan
    verdict = str(m["verdict"])
    cells = [f'<td class="text">{_esc(m["model"])}</td>', f"<td>{m['parameters']}</td>",
             f"<td>{m['eval_loss']:.4f}</td>", f"<td>{ratio:.3g}</td>",
             f"<td>{'yes' if m['eval_loss'] < baseline else 'no'}</td>",
             f"<td>{_num(m['gain'])}</td>", f"<td>{_steps(m['horizon'])}</td>",
             f"<td>{_num(m['gain_end'])}</td>", f"<td>{_steps(m['horizon_end'])}</td>",
             f'<td class="text verdict-{_esc(verdict)}">{_esc(verdict)}</td>']
    return "<tr>" + "".join(cells) + "</tr>"


def _esc(value):
    return html.escape(str(value), quote=True)


def _num(value):
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _steps(value):
    return steps_back(value, unicode=True)  # the page's way: ∞ and –


def _order(value):
    return -1.0 if value is None or math.isnan(value) else value
