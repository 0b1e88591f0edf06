"""``gradscope check TARGET``: the CI gate. Exit 0 healthy, 1 unhealthy, 2 usage or target error."""

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from gradscope.commands.arguments import positive_int

HEALTHY, UNHEALTHY, USAGE = 0, 1, 2

DESCRIPTION = """\
Watch a model while its step runs, apply the Rules and fail when gradients vanish or explode.

TARGET is package.module:function or path/to/file.py:function. The function takes no
arguments and returns (model, step); step() runs one forward and backward pass of model.
Exit status: 0 healthy, 1 unhealthy, 2 usage error or a target that fails to import or run.
"""


def _rules_epilog():
    try:
        from gradscope.gate.config import rules_help

        listing = rules_help()
    except Exception as error:  # the analyzer failing to import must not break `gradscope --help`
        listing = f"  (unavailable: {type(error).__name__}: {error})"
    return (
        "rules (set with --rule NAME=VALUE, or as NAME = VALUE under [tool.gradscope.check]\n"
        "in pyproject.toml; flags win over the file, the file over the defaults):\n" + listing
    )


def add_arguments(parser):
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _rules_epilog()
    parser.add_argument(
        "target", nargs="?", metavar="TARGET",
        help="module:function or file.py:function returning (model, step) "
        "(default: target in [tool.gradscope.check])",
    )
    parser.add_argument("--steps", type=positive_int, default=None, metavar="N",
                        help="how many times to call step() under watch (default: steps in the config, else 1)")
    parser.add_argument("--rule", action="append", default=[], metavar="NAME=VALUE",
                        help="override one Rules threshold; repeat for more (names listed below)")
    parser.add_argument("--config", metavar="PATH",
                        help="pyproject.toml to read [tool.gradscope.check] from (default: ./pyproject.toml if present)")
    parser.add_argument("--json", metavar="FILE", help="write the Diagnosis (Diagnosis.to_dict()) as JSON")
    parser.add_argument("--junit", metavar="FILE",
                        help="write JUnit XML: one testcase per module, layer and direction")


def _fail(message, error=None):
    """Print why (after the traceback of the user's code, when it raised) and return exit 2."""
    cause = getattr(error, "__cause__", None)
    if getattr(error, "reason", None) in ("function raised", "step raised") and cause is not None:
        traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
    print(f"gradscope check: error: {message}", file=sys.stderr)
    return USAGE


def _settings(args):
    """(target, steps, Rules) from flags over config over defaults; raises ConfigError."""
    from gradscope.gate.config import (
        ConfigError, default_config_path, make_rules, parse_rule_flag, read_check_config,
    )

    if args.config:
        config = read_check_config(args.config, explicit=True)
    else:
        config = read_check_config(default_config_path(), explicit=False)
    flags = dict(parse_rule_flag(text) for text in args.rule)
    target = args.target or config.target
    if not target:
        raise ConfigError(
            "no TARGET given: pass module:function or file.py:function, "
            "or set target under [tool.gradscope.check] in pyproject.toml"
        )
    return target, args.steps or config.steps or 1, make_rules(config.rules, flags)


def _no_recurrent_words(model):
    """NoRecurrentModuleError speaks of watch(cells=...), which TARGET cannot pass."""
    return (f"the model TARGET returned ({type(model).__name__}) holds no nn.RNN, nn.GRU, nn.LSTM, "
            "nn.RNNCell, nn.GRUCell or nn.LSTMCell, which is what gradscope check watches; make the "
            "function return the model that holds the recurrent layer (a custom cell or a "
            "hand-written loop needs gradscope.watch(model, cells=..., weights=...) in a test instead: "
            "docs/capture.md)")


def _write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def run(args):
    from gradscope.analysis import analyze
    from gradscope.gate.health_check import NothingRecordedError, watch_steps
    from gradscope.gate.config import ConfigError
    from gradscope.gate.output import markdown_summary, text_report, write_junit
    from gradscope.gate.targets import TargetError, load_target
    from gradscope.errors import NoRecurrentModuleError

    try:
        target, steps, rules = _settings(args)
    except ConfigError as error:
        return _fail(str(error))
    try:
        model, step = load_target(target)
        try:
            scope = watch_steps(model, step, steps)
        except NothingRecordedError as error:
            # the gate ran and measured nothing: a failed gate (exit 1) with every output written
            print(f"gradscope check: nothing was measured: {error}", file=sys.stderr)
            scope = error.scope
        except NoRecurrentModuleError as error:
            raise TargetError("no recurrent module", _no_recurrent_words(model)) from error
        except Exception as error:
            raise TargetError("step raised", f"step() raised {type(error).__name__}: {error}") from error
    except TargetError as error:
        return _fail(f"target {target}: {error}", error)
    try:
        diagnosis = analyze(scope, rules)
    except Exception:  # a bug of ours must not read as "unhealthy" (exit 1)
        traceback.print_exc()
        return _fail("gradscope failed while analysing the measurements (a gradscope bug: please report it)")

    print(text_report(diagnosis, target))
    if args.json:
        _write(args.json, json.dumps(diagnosis.to_dict(), indent=2, default=str) + "\n")
    if args.junit:
        Path(args.junit).parent.mkdir(parents=True, exist_ok=True)
        write_junit(diagnosis, args.junit, target)
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as handle:
            handle.write(markdown_summary(diagnosis, target))
    return HEALTHY if diagnosis.ok else UNHEALTHY
