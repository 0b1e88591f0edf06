"""The README's install section says what a new user needs (issue 15 item 2): how to get the CPU
build of PyTorch (the same index CI uses), what to do with a GPU, how long it takes, and that
the browser test skips without chromedriver; its quickstart pins the torch that .ci/run installs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def quickstart():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index("## Quickstart"):text.index("## Use it on your model")]


def test_the_cpu_build_comes_from_the_index_ci_uses():
    section = quickstart()
    assert f"--index-url {CPU_INDEX}" in section
    assert f"--index-url {CPU_INDEX}" in (ROOT / "examples/ci/gradient-health.yml").read_text()
    assert "CUDA" in section and "GPU" in section


def test_times_and_the_browser_test_are_stated():
    section = quickstart()
    assert re.search(r"about 3 minutes", section)
    assert "chromedriver" in section and "skipped" in section


def test_the_quickstart_commands_and_pin_match_ci():
    section = quickstart()
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    pin = re.search(r'"torch==([0-9.]+)"', ci).group(1)
    assert f'pip install "torch=={pin}" -e ".[dev]" && gradscope demo' in section
    assert "```bash\npython -m pytest\n```" in section
