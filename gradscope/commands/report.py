"""``gradscope report RUN_DIR``: render a saved run folder as an HTML report."""

import os
import sys
from pathlib import Path

OK, USAGE = 0, 2

DESCRIPTION = """\
Render a run folder (written by gradscope.watch(model, run_dir=...)) as a self-contained
HTML report with PNG figures: verdicts first, then figures, tables and how to read them.
The page opens offline; print its path and open it in any browser.
"""


def add_arguments(parser):
    parser.description = DESCRIPTION
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder to render")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder for index.html and figures/ (default: RUN_DIR/report)")
    parser.add_argument("--title", metavar="T", default=None,
                        help='page heading (default: "gradscope report: <run name>")')


def run(args):
    from gradscope.reporting import report

    from gradscope.commands.run_folder_arg import load_run_folder

    run_dir = Path(args.run_dir)
    try:
        run = load_run_folder(run_dir)
    except ValueError as error:
        print(f"gradscope report: RUN_DIR {error}", file=sys.stderr)
        return USAGE
    out = Path(args.out) if args.out else run_dir / "report"
    if not args.out and out.is_symlink():
        # the folder came with the run, maybe from someone else: writing (and clearing old
        # figures) through a link there could change files anywhere
        print(f"gradscope report: {out} is a symbolic link (to {os.readlink(out)}); gradscope does "
              "not write through links inside a run folder. Pass --out DIR.", file=sys.stderr)
        return USAGE
    try:
        page = report(run, out, title=args.title)
    except (FileNotFoundError, ValueError) as error:  # RunFormatError is a ValueError
        print(f"gradscope report: {error}", file=sys.stderr)
        return USAGE
    print(page)
    return OK
