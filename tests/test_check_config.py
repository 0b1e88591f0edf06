"""Where gradscope check's thresholds come from: Rules fields, --rule flags, pyproject.toml."""

import dataclasses
import sys

import pytest

from gradscope.gate import config as checkconfig
from gradscope.gate.config import ConfigError, make_rules, parse_rule_flag, read_check_config


@dataclasses.dataclass
class FakeRules:
    horizon_ratio: float = 1e-3
    min_horizon: int = 10
    check_saturation: bool = True
    label: str = "x"
    kinds: tuple = ("vanishing",)

    @classmethod
    def from_mapping(cls, mapping):
        return cls(**mapping)


@pytest.fixture
def fake_rules(monkeypatch):
    monkeypatch.setattr(checkconfig, "_rules_class", lambda: FakeRules)
    return FakeRules


def test_rule_flags_take_the_type_of_the_field_default(fake_rules):
    assert parse_rule_flag("horizon_ratio=0.01") == ("horizon_ratio", 0.01)
    assert parse_rule_flag("min-horizon=20") == ("min_horizon", 20)
    assert parse_rule_flag("check_saturation=false") == ("check_saturation", False)
    assert parse_rule_flag("label=abc") == ("label", "abc")
    assert parse_rule_flag("kinds=('a', 'b')") == ("kinds", ("a", "b"))


@pytest.mark.parametrize("text, words", [
    ("nonsense=1", ["unknown rule nonsense", "horizon_ratio"]),
    ("horizon_ratio", ["NAME=VALUE"]),
    ("min_horizon=many", ["expected a int"]),
    ("check_saturation=maybe", ["expected a bool"]),
])
def test_bad_rule_flags_say_what_is_wrong(fake_rules, text, words):
    with pytest.raises(ConfigError) as info:
        parse_rule_flag(text)
    for word in words:
        assert word in str(info.value)


def test_later_settings_win(fake_rules):
    rules = make_rules({"horizon_ratio": 0.1, "min_horizon": 3}, {"horizon_ratio": 0.2})
    assert rules == FakeRules(horizon_ratio=0.2, min_horizon=3)
    assert make_rules() == FakeRules()


def test_rules_help_lists_every_field_with_its_default(fake_rules):
    text = checkconfig.rules_help()
    for field in dataclasses.fields(FakeRules):
        assert field.name in text
    assert "0.001" in text


def test_config_table_is_read(fake_rules, tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text(
        '[project]\nname = "x"\n\n[tool.gradscope.check]\n'
        'target = "pkg.mod:fn"\nsteps = 3\nhorizon_ratio = 0.01\nmin_horizon = 5\n'
    )
    config = read_check_config(path)
    assert (config.target, config.steps) == ("pkg.mod:fn", 3)
    assert config.rules == {"horizon_ratio": 0.01, "min_horizon": 5}
    assert make_rules(config.rules).min_horizon == 5


def test_config_without_the_table_is_empty(fake_rules, tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.gradscope.other]\nx = 1\n')
    config = read_check_config(path)
    assert config.rules == {} and config.target is None and config.steps is None


def test_unknown_key_in_config_names_the_file(fake_rules, tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.gradscope.check]\nhorizon_ration = 0.1\n')
    with pytest.raises(ConfigError, match="horizon_ration.*pyproject.toml"):
        read_check_config(path)


def test_wrongly_typed_setting_is_an_error(fake_rules, tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.gradscope.check]\nsteps = "two"\n')
    with pytest.raises(ConfigError, match="steps"):
        read_check_config(path)


def test_named_config_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_check_config(tmp_path / "missing.toml")


def test_found_pyproject_not_naming_gradscope_is_not_parsed(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("this is [not toml\n")
    assert read_check_config(path, explicit=False).rules == {}
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_check_config(path, explicit=True)


def test_default_path_is_the_pyproject_in_the_folder(tmp_path):
    assert checkconfig.default_config_path(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text("")
    assert checkconfig.default_config_path(tmp_path) == tmp_path / "pyproject.toml"


def test_without_a_toml_parser_the_error_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.gradscope.check]\nsteps = 2\n")
    with pytest.raises(ConfigError, match="pip install tomli"):
        read_check_config(path)


def test_every_real_rule_round_trips_through_a_flag():
    from gradscope.analysis import Rules

    for name, field in checkconfig.rule_fields().items():
        default = checkconfig.rule_default(field)
        if isinstance(default, (bool, int, float, str)):
            assert parse_rule_flag(f"{name}={default}") == (name, default)
    assert make_rules({}) == Rules()
