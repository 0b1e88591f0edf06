"""A long training run recorded to disk with ``every=`` and ``run_dir=``, then ``gradscope report``.

Recording every step of a long run costs time and disk; ``every=100`` records steps 0, 100,
200, ... (the others run the model's own code untouched), and ``run_dir`` streams each recorded
step to a folder as it closes, so a crash keeps everything recorded so far and another process
can render or compare the run later:

    gradscope report runs/long-training                  # HTML report of the saved run
    gradscope compare before=runs/a after=runs/b         # two runs side by side

The model is a 1-layer LSTM character LM on Python's help text (no download).

    python examples/long_training.py                   # ~40 seconds on 2 CPU cores
    python examples/long_training.py --small           # seconds
    python examples/long_training.py --out runs/mine   # where the run folder goes
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

import gradscope
from gradscope.tasks import CharLMTask, build_model, seeded_generator


def main(small=False, out="runs/long-training"):
    torch.manual_seed(0)
    seq_len, hidden, steps, every = (16, 16, 8, 2) if small else (64, 64, 2000, 100)
    run_dir = Path(out)
    if (run_dir / "meta.json").exists():
        shutil.rmtree(run_dir)  # gradscope never appends to an old run: start this one afresh
    task = CharLMTask(seq_len=seq_len)
    model = build_model("LSTM", task, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = seeded_generator(0)

    with gradscope.watch(model, every=every, run_dir=run_dir, name="char LSTM, long run"):
        for step in range(steps):
            x, y = task.batch(32, generator)
            loss = task.loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step % every == 0:
                print(f"step {step:5d}  loss {loss.item():.3f}  (unigram baseline {task.baseline:.3f})  recorded")

    # The run folder outlives this process: load it back, or render it from the shell.
    run = gradscope.load(run_dir)
    steps_seen = sorted(int(s) for s in run.timesteps()["step"].unique())
    print(f"{run_dir}: {len(run.timesteps())} timestep rows, recorded steps {steps_seen[:4]} ... {steps_seen[-1]}")
    command = [sys.executable, "-m", "gradscope", "report", str(run_dir)]
    print("$ gradscope report", run_dir)
    result = subprocess.run(command, check=False)
    return run_dir, result.returncode


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds: tiny model and few steps")
    parser.add_argument("--out", default="runs/long-training", help="the run folder (default: %(default)s)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(main(small=args.small, out=args.out)[1])
