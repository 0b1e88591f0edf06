"""What leaving gradscope on costs in a training loop as users write it: fresh data every step,
the recurrent module under a linear head, Adam, ``gradscope.watch(model, every=16)`` with every
other setting at its default (route, spectra cadence).

Run from the repository root:
    PYTHONPATH=. python benchmarks/user_loop.py [--cells LSTM] [--sizes 16x64x1000] [--rounds 9]

``gradscope bench`` times single steps of a bare module against a plain step that shares its
process with six other cases. Two things it cannot show are measured here:

- the every=16 cost as it happens: one watched block is 16 consecutive steps (the recorded one
  and 15 off-schedule ones, in that order), against a block of 16 plain steps of a second copy,
  the two blocks alternating in random order, so what a recorded step leaves behind (its pool
  given back, pages mapped again next time) is inside the measured block;
- the plain step in the allocator state of a user's process. PyTorch's CPU LSTM maps fresh pages
  for its workspaces at every step (~11,000 faults at 16x64x1000) in a fresh process; inside
  ``gradscope bench`` it sometimes does not, which moves every ratio. The faults column shows
  which mode each run was in.

The ratio per round is watched block / plain block; the table gives the median over rounds, the
half-width of its 95% interval, and the mean (which counts a round whose recorded step also
computed weight spectra: one recorded step in 50 by default).
"""

import argparse
import copy
import random
import resource
import statistics
import time

import torch
import torch.nn as nn

import gradscope
from gradscope.bench import median_interval, parse_sizes

EVERY = 16
CELLS = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}


class UserLoop:
    """One copy of the user's model (recurrent module + linear head) with its own Adam."""

    def __init__(self, cell, hidden, seed):
        torch.manual_seed(seed)
        self.rnn = CELLS[cell](hidden, hidden)
        self.head = nn.Linear(hidden, 1)
        self.optimizer = torch.optim.Adam(list(self.rnn.parameters()) + list(self.head.parameters()), lr=1e-3)

    def clone(self):
        other = copy.deepcopy(self)
        other.optimizer = torch.optim.Adam(list(other.rnn.parameters()) + list(other.head.parameters()), lr=1e-3)
        return other

    def step(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)
        out, _ = self.rnn(x)
        nn.functional.mse_loss(self.head(out), y).backward()
        self.optimizer.step()


def _faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed_block(loop, batch, hidden, seq_len):
    """Seconds of each of ``EVERY`` steps (data made outside the timer, as a loader would) and
    the minor page faults of each."""
    seconds, faults = [], []
    for _ in range(EVERY):
        x, y = torch.randn(seq_len, batch, hidden), torch.randn(seq_len, batch, 1)
        before, start = _faults(), time.perf_counter()
        loop.step(x, y)
        seconds.append(time.perf_counter() - start)
        faults.append(_faults() - before)
    return seconds, faults


def measure(cell, batch, hidden, seq_len, rounds, seed=0):
    plain = UserLoop(cell, hidden, seed)
    watched = plain.clone()
    scope = gradscope.watch(watched.rnn, every=EVERY)
    scope.start()
    try:
        for loop in (plain, watched):  # warm up; the watched block's first step is the recorded one
            timed_block(loop, batch, hidden, seq_len)
        shuffler = random.Random(seed)
        ratios, recorded_ratios, off_ratios, plain_faults, recorded_faults = [], [], [], [], []
        for _ in range(rounds):
            order = [plain, watched]
            shuffler.shuffle(order)
            block = {}
            for loop in order:
                block[id(loop)] = timed_block(loop, batch, hidden, seq_len)
            (plain_s, plain_f), (watched_s, watched_f) = block[id(plain)], block[id(watched)]
            plain_step = statistics.fmean(plain_s)
            ratios.append(sum(watched_s) / sum(plain_s))
            recorded_ratios.append(watched_s[0] / plain_step)  # the block's first step is the recorded one
            off_ratios.append(statistics.fmean(watched_s[1:]) / plain_step)
            plain_faults.append(statistics.median(plain_f))
            recorded_faults.append(watched_f[0])
        # the recorded step is each block's first: the columns split the block by that
        block_starts = list(range(0, scope.steps_seen, EVERY))
        if scope.steps() != block_starts:
            raise RuntimeError(f"recorded steps {scope.steps()} are not the blocks' first steps {block_starts}")
    finally:
        scope.stop()
    median, halfwidth = median_interval(ratios)
    return {"cell": cell, "batch": batch, "hidden": hidden, "seq_len": seq_len, "rounds": rounds,
            "median": median, "halfwidth": halfwidth, "mean": statistics.fmean(ratios),
            "recorded": statistics.median(recorded_ratios), "off": statistics.median(off_ratios),
            "plain_faults": statistics.median(plain_faults), "recorded_faults": statistics.median(recorded_faults)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="RNN,GRU,LSTM", help="comma-separated (default: RNN,GRU,LSTM)")
    parser.add_argument("--sizes", default="default", help="as gradscope bench's --sizes (default: default)")
    parser.add_argument("--rounds", type=int, default=9, help="pairs of blocks per size (default: 9)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"every={EVERY}, default settings, in a user-like loop (Adam, linear head, fresh data); "
          f"{torch.get_num_threads()} threads; watched block of {EVERY} steps / plain block")
    print(f"{'cell':5}{'B':>5}{'H':>5}{'T':>6}  {'median':>7}  {'95% ±':>6}  {'mean':>6}  {'recorded':>8}  "
          f"{'off-sched':>9}  {'flt plain':>9}  {'flt rec':>7}")
    for cell in args.cells.split(","):
        for batch, hidden, seq_len in parse_sizes(args.sizes):
            row = measure(cell, batch, hidden, seq_len, args.rounds)
            print(f"{cell:5}{batch:>5}{hidden:>5}{seq_len:>6}  {row['median']:6.3f}x  {row['halfwidth']:5.1%}"
                  f"  {row['mean']:5.3f}x  {row['recorded']:7.2f}x  {row['off']:8.3f}x  {row['plain_faults']:9.0f}"
                  f"  {row['recorded_faults']:7.0f}", flush=True)
    print("median, mean: watched block of 16 steps / plain block; recorded, off-sched: its first step, and the mean "
          "of the other 15, / the plain block's mean step; flt: minor page faults of a plain step and of the "
          "recorded step (median)")


if __name__ == "__main__":
    main()
