"""Where the thresholds of ``gradscope check`` come from: Rules defaults, then
``[tool.gradscope.check]`` in pyproject.toml, then ``--rule NAME=VALUE`` flags.

Rule names are read from the ``Rules`` dataclass itself, so the flags and the config keys can
never drift from the analyzer.
"""

import ast
import dataclasses
import inspect
import re
import sys
import textwrap
from pathlib import Path

SECTION = ("tool", "gradscope", "check")
# keys of [tool.gradscope.check] that are settings of the check itself, not Rules fields
SETTINGS = {"target": str, "steps": int}


class ConfigError(ValueError):
    """A config file or a rule setting gradscope check cannot use (a usage error: exit 2)."""


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    """What ``[tool.gradscope.check]`` asked for (``path`` is None when no file was read)."""

    path: Path = None
    target: str = None
    steps: int = None
    rules: dict = dataclasses.field(default_factory=dict)


def _rules_class():
    from gradscope.analysis import Rules

    return Rules


def rule_fields():
    """{name: dataclasses.Field} of every threshold ``Rules`` has."""
    return {f.name: f for f in dataclasses.fields(_rules_class()) if f.init}


def rule_default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _field_docs(cls):
    """{field: first sentence of the docstring written under it in the class body}."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant)
                and isinstance(after.value.value, str)):
            text = " ".join(after.value.value.split())
            docs[node.target.id] = re.split(r"\.\s+(?=[A-Z0-9])", text)[0].rstrip(".") + "."
    return docs


def rules_help():
    """One line per Rules field with its default (and the first sentence of its docstring)."""
    docs = _field_docs(_rules_class())
    lines = []
    for name, field in rule_fields().items():
        doc = field.metadata.get("help") or docs.get(name, "")
        lines.append(f"  {name} = {rule_default(field)!r}")
        if doc:
            lines.append(textwrap.fill(doc, width=88, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def _check_names(mapping, origin):
    known = rule_fields()
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown rule{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in {origin}; "
            f"known rules: {', '.join(known)} (see `gradscope check --help`)"
        )


def make_rules(*overrides):
    """A ``Rules`` from its defaults updated by each mapping in turn (later ones win)."""
    merged = {}
    for mapping in overrides:
        merged.update(mapping or {})
    _check_names(merged, "the rule settings")
    try:
        return _rules_class().from_mapping(merged)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid rule setting: {error}") from error


def parse_rule_flag(text):
    """``"NAME=VALUE"`` -> (name, value), the value converted to the type of the field's default."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name:
        raise ConfigError(f"--rule expects NAME=VALUE, got {text!r}")
    _check_names({name: None}, f"--rule {text}")
    return name, _coerce(raw.strip(), rule_default(rule_fields()[name]), name)


def _coerce(raw, default, name):
    try:
        if isinstance(default, bool):
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            number = float(raw)
            return int(number) if number.is_integer() else number
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, str):
            return raw
    except ValueError:
        raise ConfigError(
            f"--rule {name}={raw}: expected a {type(default).__name__} like {default!r}"
        ) from None
    # None, tuples, lists, dicts: a Python literal, else the plain string
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _load_toml(path):
    try:
        import tomllib
    except ModuleNotFoundError:
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ConfigError(
                f"reading {path} needs tomllib (Python 3.11+) or the tomli package on "
                f"Python {sys.version_info.major}.{sys.version_info.minor}: "
                "`pip install tomli`, or pass the rules as --rule NAME=VALUE"
            ) from None
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from error


def default_config_path(directory="."):
    """``./pyproject.toml`` when it exists, else None."""
    path = Path(directory) / "pyproject.toml"
    return path if path.is_file() else None


def read_check_config(path, *, explicit=True):
    """The ``[tool.gradscope.check]`` table of ``path``.

    ``explicit``: the user named this file, so a missing file is an error. A pyproject.toml
    that was only found (not named) and does not mention gradscope is never parsed, so a
    project on Python < 3.11 without tomli still runs the check.
    """
    if path is None:
        return CheckConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if not explicit and "gradscope" not in path.read_text(encoding="utf-8", errors="replace"):
        return CheckConfig(path=path)
    table = _load_toml(path)
    for key in SECTION:
        table = table.get(key, {}) if isinstance(table, dict) else {}
    if not isinstance(table, dict):
        raise ConfigError(f"[{'.'.join(SECTION)}] in {path} must be a table")
    table = dict(table)
    settings = {}
    for key, kind in SETTINGS.items():
        if key in table:
            value = table.pop(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"{key} in [{'.'.join(SECTION)}] of {path} must be a {kind.__name__}")
            settings[key] = value
    _check_names(table, f"[{'.'.join(SECTION)}] of {path}")
    return CheckConfig(path=path, rules=table, **settings)
