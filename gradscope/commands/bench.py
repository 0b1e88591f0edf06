"""``gradscope bench``: print the measured overhead ratios of watching (exit 2 on bad arguments)."""

import argparse
import json
import math
import sys

from gradscope.commands.demo import positive_int

DESCRIPTION = (
    "Time one training step (forward, backward, optimizer step) of nn.RNN, nn.GRU and nn.LSTM under "
    "watch against the same step unwatched, alternately in one process: the exact route every step, "
    "the fast route (where this gradscope has mode='fast'), every=16 amortised, a step every=16 does "
    "not record, and the hand-written cell loop with retain_grad(); plus peak-memory ratios. Only "
    "ratios are printed: the machine's speed and load change absolute times."
)


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value}")
    return value


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value}")
    return value


def _one_line_error(message):
    print(f"gradscope bench: error: {message} (see gradscope bench --help)", file=sys.stderr)
    sys.exit(2)


def add_arguments(parser):
    parser.description = DESCRIPTION
    parser.error = _one_line_error
    parser.add_argument("--cells", default="RNN,GRU,LSTM",
                        help="comma-separated, from RNN, GRU, LSTM (default: %(default)s)")
    parser.add_argument("--sizes", default="default",
                        help="'default' = 32x256x200,64x128x100,16x64x1000 (BxHxT: batch, hidden, sequence "
                             "length; input size = hidden), 'small' = 4x8x12, or your own list "
                             "like 32x256x200,8x64x50 (default: %(default)s)")
    parser.add_argument("--layers", type=positive_int, default=1, help="layers of each module (default: %(default)s)")
    parser.add_argument("--repeat", type=positive_int, default=7,
                        help="minimum rounds per configuration; the medians are of at least this many "
                             "(default: %(default)s)")
    parser.add_argument("--max-repeat", type=positive_int, default=30,
                        help="most rounds per configuration while a ratio is not yet stable (default: %(default)s)")
    parser.add_argument("--tolerance", type=_fraction, default=0.03,
                        help="stable: every median's 95%% interval is within this fraction of it "
                             "(default: %(default)s)")
    parser.add_argument("--budget", type=_seconds, default=60.0,
                        help="seconds shared by all configurations: past --repeat rounds, a configuration "
                             "stops adding rounds once its share is spent, and an unstable ratio is printed "
                             "with its wide interval (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's own setting)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda; cuda times with CUDA events (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (default: %(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON (default: none)")


def run(args):
    import torch

    from gradscope.bench import CELLS, parse_sizes, run as run_bench

    cells = [c.strip().upper() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if not cells or unknown:
        return _fail(f"--cells: unknown cell {unknown[0] if unknown else args.cells!r}; choose from "
                     f"{', '.join(CELLS)}")
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as error:
        return _fail(str(error))
    if args.max_repeat < args.repeat:
        return _fail(f"--max-repeat ({args.max_repeat}) is below --repeat ({args.repeat}); raise it")
    device = args.device.strip().lower()
    if device not in ("cpu", "cuda"):
        return _fail(f"--device: {args.device!r} is not cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        return _fail("--device cuda: CUDA is not available to this torch "
                     f"({torch.__version__}); run on a GPU machine or use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_bench(cells, sizes=sizes, layers=args.layers, device=device, repeat=args.repeat,
                     max_repeat=args.max_repeat, tolerance=args.tolerance, budget_s=args.budget, seed=args.seed)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
                       for row in rows], fh, indent=2)
    return 0


def _fail(message):
    print(f"gradscope bench: error: {message}", file=sys.stderr)
    return 2
