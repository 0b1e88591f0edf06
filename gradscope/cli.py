"""The ``gradscope`` command line: one subcommand per file in ``gradscope/commands``."""

import argparse
import sys
from importlib import import_module

# subcommand -> module in gradscope.commands that defines add_arguments(parser) and run(args)
COMMANDS = {
    "demo": ("demo", "train RNN, GRU and LSTM on a long-dependency task under watch and write a comparison report"),
    "report": ("report", "render a saved run folder as an HTML report"),
    "compare": ("compare", "render several saved runs side by side: NAME=RUN_DIR ..."),
    "check": ("check", "CI gate: exit 0 healthy, 1 unhealthy, 2 usage or target error"),
    "bench": ("bench", "print the measured overhead ratios of watching"),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="gradscope",
        description="Measure whether gradients vanish or explode through time in PyTorch RNN/GRU/LSTM models.",
    )
    from gradscope import __version__

    parser.add_argument("--version", action="version", version=f"gradscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = import_module(f"gradscope.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    code = args._run(args)
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
