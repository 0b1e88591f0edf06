"""`gradscope demo`: RNN vs GRU vs LSTM on a built-in long-dependency task, under watch.

Heavy imports (torch, the tasks) happen in ``run`` so that ``gradscope --help`` stays fast.
"""

import sys

from gradscope.commands.arguments import positive_int
from gradscope.tasks.defaults import DEFAULTS, TASK_NAMES


def add_arguments(parser):
    parser.description = (
        "Train a plain RNN, a GRU and an LSTM (same hidden size, same seed) on a built-in task that "
        "needs memory over the whole sequence, record their per-timestep gradients with "
        "gradscope.watch, and write a comparison report with the task loss against the trivial "
        "baseline. Data are generated (or read from Python's own help text for charlm); nothing is "
        "downloaded.")
    parser.add_argument("--task", choices=TASK_NAMES, default=DEFAULTS["task"],
                        help="adding: sum of two marked numbers (MSE; baseline 0.167); copy: recall 5 "
                             "symbols after a delay; charlm: next character of Python's help text "
                             "(default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=DEFAULTS["steps"],
                        help="training steps per model (default: %(default)s)")
    parser.add_argument("--seq-len", type=positive_int, default=DEFAULTS["seq_len"],
                        help="sequence length T (default: %(default)s)")
    parser.add_argument("--hidden", type=positive_int, default=DEFAULTS["hidden"],
                        help="hidden size of every model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                        help="seed for weights and data, the same for all models (default: %(default)s)")
    parser.add_argument("--every", type=positive_int, default=DEFAULTS["every"],
                        help="record every N-th training step (default: %(default)s)")
    parser.add_argument("--out", default=DEFAULTS["out"],
                        help="output folder: report index.html, runs/<model>/ (default: %(default)s)")


def run(args):
    from gradscope.tasks.demo import format_results, run_demo

    try:
        results = run_demo(task=args.task, steps=args.steps, seq_len=args.seq_len, hidden=args.hidden,
                           seed=args.seed, every=args.every, out=args.out)
    except (ValueError, FileExistsError) as error:
        print(f"gradscope demo: {error}", file=sys.stderr)
        return 2
    print(format_results(results))
    return 0
