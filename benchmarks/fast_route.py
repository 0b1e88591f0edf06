"""Cost of a recorded training step on the fast route, against the plain step and the exact route.

Run: `PYTHONPATH=. python benchmarks/fast_route.py [--repeat 7] [--kinds RNN,GRU,LSTM] [--size 32,256,200]
[--profile]` from the repository root. Variants alternate within each repetition (the machine is
noisy); the table gives medians of the ratios to the plain step of the same repetition.
"capture only" leaves the weight spectra out of the step (they are measured at step close and
are being moved off the critical path separately), so the capture's own cost shows.
`--profile` splits a fast step on the CPU into its parts (timers around gradscope's own BPTT).
"""

import argparse
import contextlib
import statistics
import time
from unittest import mock

import torch
import torch.nn as nn

import gradscope


def _no_spectra(step):
    """``spectra_every`` for "capture only": no recorded step gets weight spectra."""
    return False


def make(kind, size_h, size_i):
    cls = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}[kind]
    return cls(size_i, size_h, batch_first=True)


def one_step(model, opt, x, y):
    opt.zero_grad()
    out, _ = model(x)
    loss = ((out - y) ** 2).mean()
    loss.backward()
    opt.step()


CLOCK = time.perf_counter


def timed(fn):
    start = CLOCK()
    fn()
    return CLOCK() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="repetitions (default 7)")
    parser.add_argument("--kinds", default="RNN,GRU,LSTM", help="default RNN,GRU,LSTM")
    parser.add_argument("--size", default="32,256,200", help="B,H,T (default 32,256,200)")
    parser.add_argument("--profile", action="store_true",
                        help="also split a fast step of each kind into the recursion's parts")
    parser.add_argument("--spectra", action="store_true",
                        help="also time steps with the weight spectra (default: capture only)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's choice)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: time.perf_counter; cpu: this process's CPU time (steadier on a "
                             "shared machine; use with --threads 1). Default wall")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, hidden, steps = (int(v) for v in args.size.split(","))
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, clock {args.clock}, "
          f"(B,H,T)=({batch},{hidden},{steps}), {args.repeat} repetitions, medians of per-repetition ratios")
    variants = ("plain",) + tuple(v for v in ("fast", "fast capture only", "exact", "exact capture only")
                                  if args.spectra or "only" in v)
    for kind in args.kinds.split(","):
        model = make(kind, hidden, hidden)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        x = torch.randn(batch, steps, hidden)
        y = torch.randn(batch, steps, hidden)
        times = {v: [] for v in variants}

        def run(variant):
            if variant == "plain":
                return timed(lambda: one_step(model, opt, x, y))
            mode = variant.split()[0]
            spectra_every = _no_spectra if "only" in variant else 1
            with gradscope.watch(model, mode=mode, spectra_every=spectra_every):
                return timed(lambda: one_step(model, opt, x, y))

        for v in variants:  # warm up
            run(v)
        for _ in range(args.repeat):
            for v in variants:
                times[v].append(run(v))
        plain = statistics.median(times["plain"])
        ratios = {v: statistics.median(t / p for t, p in zip(times[v], times["plain"])) for v in variants}
        print(f"{kind:5s} plain {plain * 1e3:7.1f} ms | " +
              " | ".join(f"{v} {ratios[v]:.2f}x" for v in variants[1:]), flush=True)
    if args.profile:
        profile(batch, hidden, steps)


def profile(batch, hidden, steps, repeat=5):
    """Medians of one fast step's parts on the CPU (gradscope's own BPTT; its functions wrapped
    with timers): the forward (RNN/GRU: gradscope's loop; LSTM: the fused op), the gates
    recomputed and c_t rebuilt (LSTM), gate statistics, derivative factors, the reverse loop,
    weight gradients, norms."""
    from gradscope.capture import accumulate, own_bptt, own_lstm_layer

    parts = {}

    def timer(name, fn):
        def wrapped(*args, **kwargs):
            start = CLOCK()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[name] = parts.get(name, 0.0) + CLOCK() - start
        return wrapped

    wrapped = {
        own_bptt: [("_forward", "forward loop"), ("_factors", "factors"), ("_gate_statistics", "gate statistics"),
                   ("_bptt", "reverse loop"), ("_gradients", "weight gradients")],
        own_lstm_layer: [("_fused", "fused forward"), ("_stepped_forward", "stepped forward"),
                         ("_recompute", "gates recomputed + c scan"),
                         ("gate_statistics", "gate statistics"), ("Factors", "factors"), ("bptt", "reverse loop"),
                         ("gradients", "weight gradients")],
    }
    patches = [mock.patch.object(module, name, timer(label, getattr(module, name)))
               for module, names in wrapped.items() for name, label in names]
    patches.append(mock.patch.object(accumulate.Series, "reduce", timer("norms", accumulate.Series.reduce)))
    for kind in ("RNN", "GRU", "LSTM"):
        model = make(kind, hidden, hidden)
        x = torch.randn(batch, steps, hidden)
        seen = {}
        for _ in range(repeat):
            seen.setdefault("plain step", []).append(timed(lambda: model(x)[0].pow(2).mean().backward()))
            parts.clear()
            with contextlib.ExitStack() as stack:
                for patch in patches:
                    stack.enter_context(patch)
                stack.enter_context(gradscope.watch(model, mode="fast", spectra_every=_no_spectra))
                seen.setdefault("fast step", []).append(timed(lambda: model(x)[0].pow(2).mean().backward()))
            for name, value in parts.items():
                seen.setdefault(name, []).append(value)
        print(kind, " | ".join(f"{name} {statistics.median(v) * 1e3:.1f} ms" for name, v in seen.items()), flush=True)


if __name__ == "__main__":
    main()
