"""The demo run behind `gradscope demo`: train RNN, GRU and LSTM on one task under watch,
then write their run folders, a comparison report and the task numbers beside it.

Layout of ``out``::

    runs/RNN/  runs/GRU/  runs/LSTM/   run folders (gradscope.load), meta["task"] holds the losses
    index.html + PNGs                  gradscope.compare of the three, with a task-loss section
    demo.json                          every number the demo prints, for scripts and tests
"""

import json
import math
import os
import time
from pathlib import Path

import torch

from gradscope.analysis.diagnosis import jsonable
from gradscope.display import steps_back
from gradscope.tasks import KINDS, build_model, evaluate, make_task, train
from gradscope.tasks.defaults import DEFAULTS
from gradscope.tasks.progress import ProgressBar
from gradscope.tasks.report_section import insert_section, task_section
from gradscope.tasks.task_figure import draw_task_figure

FIGURE = "task-loss.png"




def run_demo(task="adding", steps=DEFAULTS["steps"], seq_len=DEFAULTS["seq_len"], hidden=DEFAULTS["hidden"],
             seed=0, every=DEFAULTS["every"], out=DEFAULTS["out"], batch_size=DEFAULTS["batch_size"],
             lr=DEFAULTS["lr"], kinds=KINDS, stream=None, threads=1):
    """Train each of ``kinds`` on ``task`` under ``gradscope.watch``; returns the results dict
    also written to ``out/demo.json`` (its ``"report"`` entry is the path of index.html).

    ``threads``: torch's intra-op threads while the demo runs (restored afterwards; ``None``
    leaves torch's setting). These models are so small that thread hand-offs cost more than
    they save: 300 steps of all three took 20-24 s with one thread and 18-384 s with torch's
    default two on a shared 2-core machine (docs/demo.md).
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _run_demo(task, steps, seq_len, hidden, seed, every, out, batch_size, lr, kinds, stream)
    finally:
        torch.set_num_threads(previous)


def _run_demo(task, steps, seq_len, hidden, seed, every, out, batch_size, lr, kinds, stream):
    import gradscope

    _check_numbers(steps=steps, seq_len=seq_len, hidden=hidden, every=every, batch_size=batch_size)
    the_task = make_task(task, seq_len)
    out = Path(out)
    run_dirs = {kind: out / "runs" / kind for kind in kinds}
    for run_dir in run_dirs.values():
        _clear_old_run(run_dir)

    models, curves = [], {}
    for kind in kinds:
        torch.manual_seed(seed)  # dropout-free models, but keep any global draw reproducible
        model = build_model(kind, the_task, hidden, seed=seed)
        bar = ProgressBar(kind, steps, stream=stream)
        started = time.perf_counter()
        # a small model recorded every N-th step: every recorded step's spectra cost little, and
        # the report draws them over training (the default would keep every 50th recorded step's)
        with gradscope.watch(model, every=every, run_dir=run_dirs[kind], name=kind, spectra_every=1):
            losses = train(model, the_task, steps, batch_size=batch_size, lr=lr, seed=seed,
                           on_step=lambda step, loss: bar.update(step + 1, loss))
        bar.close()
        wall = time.perf_counter() - started
        diagnosis = gradscope.analyze(run_dirs[kind])
        numbers = _model_numbers(kind, model, the_task, losses, diagnosis, wall, every)
        models.append(numbers)
        curves[kind] = losses
        _add_to_meta(run_dirs[kind], {"task": {**the_task.describe(), **_training(steps, hidden, seed, lr, batch_size),
                                               "eval_loss": numbers["eval_loss"],
                                               "final_train_loss": numbers["final_train_loss"]}})

    title = f"gradscope demo: {' vs '.join(kinds)} on the {the_task.name} task (T = {the_task.seq_len})"
    report = gradscope.compare({kind: run_dirs[kind] for kind in kinds}, out, title=title)
    results = {"task": the_task.describe(), "training": _training(steps, hidden, seed, lr, batch_size),
               "every": every, "models": models, "report": str(report), "figure": FIGURE}
    draw_task_figure(out / FIGURE, curves, {m["model"]: m["history"] for m in models}, results["task"],
                     smooth=max(1, min(25, steps // 10)))
    insert_section(report, task_section(results))
    (out / "demo.json").write_text(json.dumps(jsonable(results), indent=2) + "\n", encoding="utf-8")
    return results


def format_results(results):
    """The plain-text table the command prints."""
    task = results["task"]
    lines = [f"task {task['task']}, T = {task['seq_len']}: baseline {task['loss_name']} "
             f"{task['baseline']:.4f} ({task['baseline_note']})",
             f"{'model':<6}{'loss':>9}{'/ baseline':>12}{'gain':>8}{'horizon':>9}{'gain@end':>10}"
             f"{'horizon@end':>13}  verdict"]
    for m in results["models"]:
        lines.append(f"{m['model']:<6}{m['eval_loss']:>9.4f}{m['eval_loss'] / task['baseline']:>12.3g}"
                     f"{m['gain']:>8.3f}{steps_back(m['horizon']):>9}{m['gain_end']:>10.3f}"
                     f"{steps_back(m['horizon_end']):>13}  {m['verdict']}")
    lines.append("loss: on a held-out batch of 512 after training; gain, horizon: over all recorded steps "
                 "(@end: the last recorded step); horizon in time steps back")
    lines.append(f"report: {results['report']}")
    return "\n".join(lines)


def _model_numbers(kind, model, task, losses, diagnosis, wall, every):
    summary = diagnosis.summary()
    per_step = diagnosis.per_step()
    history = [{"step": int(step), "gain": float(gain), "horizon": float(horizon),
                # the training loss around that recorded step: the mean over the next `every` steps
                "train_loss": float(sum(losses[int(step):int(step) + every]) / len(losses[int(step):int(step) + every]))}
               for step, gain, horizon in zip(per_step["step"], per_step["gain"], per_step["horizon"])
               if int(step) < len(losses)]
    row = summary.iloc[0] if len(summary) else {}
    last = per_step[per_step["step"] == per_step["step"].max()].iloc[0] if len(per_step) else {}
    tail = losses[-max(1, len(losses) // 10):]
    return {
        "model": kind,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "eval_loss": evaluate(model, task),
        "final_train_loss": float(sum(tail) / len(tail)),
        "gain": float(row.get("gain_pooled", math.nan)),
        "horizon": float(row.get("horizon_pooled", math.nan)),
        "gain_end": float(last.get("gain", math.nan)),
        "horizon_end": float(last.get("horizon", math.nan)),
        "verdict": str(row.get("verdict", "?")),
        "wall_s": wall,
        "history": history,
    }


def _training(steps, hidden, seed, lr, batch_size):
    return {"steps": int(steps), "hidden": int(hidden), "seed": int(seed), "lr": float(lr),
            "batch_size": int(batch_size), "optimizer": "Adam", "clip_grad_norm": 1.0}


def _check_numbers(**numbers):
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def _clear_old_run(run_dir):
    # The demo owns OUT/runs/<model>: an earlier demo's run there is replaced. Anything that
    # does not look like a run folder (no meta.json, or subfolders) is left alone.
    if not run_dir.exists():
        return
    entries = list(run_dir.iterdir())
    if not entries:
        return
    if not (run_dir / "meta.json").is_file() or any(e.is_dir() for e in entries):
        raise FileExistsError(f"{run_dir} exists and is not a gradscope run folder; "
                              "remove it or pass another --out")
    for entry in entries:
        entry.unlink()


def _add_to_meta(run_dir, extra):
    path = run_dir / "meta.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.update(jsonable(extra))
    temporary = path.with_name(path.name + ".demo-tmp")
    temporary.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
