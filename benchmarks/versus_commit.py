"""Before/after in one process: a recorded training step of this checkout's gradscope against an
earlier commit's, both as ratios to the plain step of the same round.

Run from the repository root, e.g.
    PYTHONPATH=. python benchmarks/versus_commit.py e0f62af --kind LSTM --size 16x64x1000 [--threads 1]

``gradscope bench`` compares one gradscope with the plain step; across two processes its plain
step alone moved by up to 2x on this machine (allocator and thread state), so a change of a few
percent is only visible with both versions in one process. The earlier commit's ``gradscope``
package is extracted with ``git archive`` into a temporary folder and imported as
``gradscope_base`` (its absolute imports renamed); the rounds alternate which version goes first.
"""

import argparse
import pathlib
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import torch


def load_base(commit):
    """The commit's gradscope package, importable as ``gradscope_base``."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="gradscope-base-"))
    archive = subprocess.run(["git", "archive", commit, "gradscope"], check=True, capture_output=True).stdout
    archive_path = folder / "base.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(folder, filter="data")
    package = folder / "gradscope"
    for path in package.rglob("*.py"):
        text = path.read_text()
        # every dotted name, in code and in strings (the package imports its exports lazily by name)
        text = re.sub(r"\bgradscope\.(?=[a-z_{])", "gradscope_base.", text)
        text = re.sub(r"\b(from|import) gradscope\b(?!_)", r"\1 gradscope_base", text)
        path.write_text(text)
    package.rename(folder / "gradscope_base")
    sys.path.insert(0, str(folder))
    import gradscope_base
    return gradscope_base


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", help="the earlier commit (any git revision)")
    parser.add_argument("--kind", default="LSTM", help="RNN, GRU or LSTM (default LSTM)")
    parser.add_argument("--size", default="32x256x200", help="BxHxT (default 32x256x200)")
    parser.add_argument("--mode", default="fast", help="fast or exact (default fast)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds (default 15)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import gradscope
    from gradscope.bench_steps import TrainingStep, make_model

    base = load_base(args.commit)
    batch, hidden, steps = (int(v) for v in args.size.split("x"))
    model = make_model(args.kind, hidden, 1, "cpu", 0)
    x = torch.randn(steps, batch, hidden)
    plain, before, after = TrainingStep(model, x), TrainingStep(model, x), TrainingStep(model, x)
    never = lambda step: False  # spectra left out: the capture's own cost
    base.watch(before.model, mode=args.mode, spectra_every=never).start()
    gradscope.watch(after.model, mode=args.mode, spectra_every=never).start()
    for case in (plain, before, after):
        case.step()
        case.step()
    ratios = {"base": [], "this": []}
    for index in range(args.rounds):
        start = time.perf_counter()
        plain.step()
        plain_s = time.perf_counter() - start
        pair = [("base", before), ("this", after)]
        for name, case in (pair if index % 2 else pair[::-1]):
            start = time.perf_counter()
            case.step()
            ratios[name].append((time.perf_counter() - start) / plain_s)
    print(f"{args.kind} {args.size} {args.mode}, {torch.get_num_threads()} threads, {args.rounds} rounds, "
          f"median ratio to the plain step: {args.commit} {statistics.median(ratios['base']):.3f}x, "
          f"this checkout {statistics.median(ratios['this']):.3f}x")


if __name__ == "__main__":
    main()
