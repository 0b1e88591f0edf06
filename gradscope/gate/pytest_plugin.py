"""pytest plugin (entry point ``pytest11: gradscope``): the ``gradient_health`` fixture.

Kept import-cheap: pytest loads it in every project where gradscope is installed, so torch
and the analyzer load only when a test uses the fixture.
"""

from collections.abc import Mapping

import pytest


@pytest.fixture
def gradient_health(pytestconfig):
    """A callable ``(model, step, rules=None, steps=1) -> Diagnosis`` that fails the test
    (AssertionError listing the findings) when gradients vanish or explode.

    The rules start from ``[tool.gradscope.check]`` in the pyproject.toml at pytest's rootdir,
    as ``gradscope check`` does; a mapping given as ``rules`` overrides single fields, a
    ``gradscope.Rules`` replaces them all.
    """

    def assert_healthy(model, step, rules=None, steps=1):
        from gradscope.gate.config import default_config_path, read_check_config
        from gradscope.gate.assertions import assert_gradients_healthy

        if rules is None or isinstance(rules, Mapping):
            config = read_check_config(default_config_path(pytestconfig.rootpath), explicit=False)
            rules = {**config.rules, **(rules or {})}
        return assert_gradients_healthy(model, step, rules=rules, steps=steps)

    return assert_healthy
