"""``gradscope compare NAME=RUN_DIR ...``: render several saved runs side by side."""

import sys
from pathlib import Path

OK, USAGE = 0, 2

DESCRIPTION = """\
Render several run folders on one HTML page: verdicts per run side by side, figures with the
runs overlaid on the same axes, and one summary table. Name each run: RNN=runs/rnn GRU=runs/gru
(a bare RUN_DIR is named after its folder). Runs appear in the order given.
"""


def add_arguments(parser):
    parser.description = DESCRIPTION
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR", help="a run's display name and folder")
    parser.add_argument("--out", metavar="DIR", default="reports/compare",
                        help="folder for index.html and figures/ (default: reports/compare)")
    parser.add_argument("--title", metavar="T", default=None,
                        help='page heading (default: "gradscope comparison: <names>")')


def parse_runs(items):
    """``["RNN=runs/rnn", "runs/gru"]`` -> ``{"RNN": "runs/rnn", "gru": "runs/gru"}``; the
    first ``=`` splits (names cannot hold one, paths can). Raises ValueError on a repeated or
    empty name."""
    runs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).resolve().name, item
        if not name or not path:
            raise ValueError(f"{item!r} is not NAME=RUN_DIR: both parts are needed")
        if name in runs:
            raise ValueError(f"the name {name!r} is given twice; give each run its own NAME=")
        runs[name] = path
    return runs


def run(args):
    from gradscope.reporting import compare

    from gradscope.commands.run_folder_arg import load_run_folder

    try:
        runs = parse_runs(args.runs)
    except ValueError as error:
        print(f"gradscope compare: {error}", file=sys.stderr)
        return USAGE
    for name, path in runs.items():
        try:
            runs[name] = load_run_folder(Path(path))
        except ValueError as error:
            print(f"gradscope compare: {name}={path}: {error}", file=sys.stderr)
            return USAGE
    try:
        page = compare(runs, Path(args.out), title=args.title)
    except (FileNotFoundError, ValueError) as error:  # RunFormatError is a ValueError
        print(f"gradscope compare: {error}", file=sys.stderr)
        return USAGE
    print(page)
    return OK
