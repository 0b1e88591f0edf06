"""report(): the page, its figures, escaping, and figures that skip themselves without data."""

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gradscope
from PIL import Image

from gradscope.reporting import report
from gradscope.reporting.files import figure_name, write_figures
from gradscope.reporting.plots import heatmap
from gradscope.reporting.sources import evenly_spaced
from test_report_fakes import FakeSource

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE_RUN = "<script>alert(1)</script>"
HOSTILE_MODULE = 'enc"><img src=x onerror=alert(2)>/../$\\x$'


def image_sources(page_text):
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', page_text)


def assert_valid_pngs(page):
    sources = image_sources(page.read_text(encoding="utf-8"))
    assert sources, "the page shows no figure"
    for src in sources:
        assert not re.match(r"^[a-z]+:", src) and not src.startswith("/"), f"{src} is not a relative link"
        path = page.parent / src
        assert path.is_file(), f"{src} is referenced but missing"
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.size[0] > 100 and image.size[1] > 100
    return sources


@pytest.fixture(scope="module")
def lstm_page(tmp_path_factory):
    source = FakeSource(name="bi-LSTM", cell="LSTM", modules=("encoder.rnn",), layers=1,
                        directions=("forward", "reverse"), T=20, steps=4, gain=0.5, drift=0.9)
    return report(source, tmp_path_factory.mktemp("lstm") / "out", title="My LSTM")


def test_report_writes_index_html_and_returns_its_path(lstm_page):
    assert lstm_page.name == "index.html" and lstm_page.is_file()
    text = lstm_page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<title>My LSTM</title>" in text


def test_every_referenced_png_exists_and_is_valid(lstm_page):
    sources = assert_valid_pngs(lstm_page)
    kinds = {re.sub(r"^figures/\d+-([a-z]+(?:-history)?)-.*", r"\1", s) for s in sources}
    assert {"gain", "timesteps", "heatmap", "spectrum", "sigma-history", "jacobians", "lyapunov",
            "gates"} <= kinds


def test_sections_come_in_order_verdicts_figures_tables_explanation(lstm_page):
    text = lstm_page.read_text(encoding="utf-8")
    positions = [text.index(f'<section id="{name}">') for name in ("verdicts", "figures", "tables", "reading")]
    assert positions == sorted(positions)
    assert "carried" in text and "direct" in text and "horizon" in text


def test_verdicts_come_from_analyze_with_evidence_and_advice(lstm_page):
    text = lstm_page.read_text(encoding="utf-8")
    verdicts = text[text.index('<section id="verdicts">'):text.index('<section id="figures">')]
    # gain about 0.55 over 20 steps: the horizon (about 12 steps) is shorter than the sequence
    assert "vanishing" in verdicts and 'class="status bad"' in verdicts
    assert 'class="chip"><code>gain</code>' in verdicts and 'class="advice"' in verdicts


def test_page_is_self_contained(lstm_page):
    text = lstm_page.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    assert "@import" not in text and "url(" not in text
    for href in re.findall(r'href="([^"]*)"', text):
        assert href.startswith("#"), href


def test_timestep_excerpt_lists_each_state(lstm_page):
    text = lstm_page.read_text(encoding="utf-8")
    tables = text[text.index('<section id="tables">'):text.index('<section id="reading">')]
    assert "t=0" in tables and "t=19" in tables
    assert tables.count('<td class="text" title="c">c</td>') == 2  # forward and reverse cell state


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory):
    source = FakeSource(name=HOSTILE_RUN, cell="RNN_TANH", modules=(HOSTILE_MODULE,), layers=1, T=12,
                        steps=1, jacobians=False, spectra=False, nonfinite_step=0)
    return report(source, tmp_path_factory.mktemp("hostile"), title="<b>bold</b> & co")


def test_names_from_the_model_and_the_user_are_escaped(hostile_page):
    text = hostile_page.read_text(encoding="utf-8")
    assert HOSTILE_RUN not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img src=x" not in text and "onerror=alert(2)>" not in text
    assert "&lt;img src=x onerror=alert(2)&gt;" in text
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in text


def test_figure_files_have_safe_names_inside_the_figures_folder(hostile_page):
    sources = assert_valid_pngs(hostile_page)
    for src in sources:
        assert re.fullmatch(r"figures/\d{2,3}-[a-z0-9_-]+\.png", src), src
    assert not list(hostile_page.parent.parent.glob("*.png"))


def test_missing_data_skips_its_figures_and_says_why(hostile_page):
    text = hostile_page.read_text(encoding="utf-8")
    assert "spectrum" not in " ".join(image_sources(text))
    assert "jacobians=True" in text and "Only one training step" in text


def test_nonfinite_gradients_are_a_verdict(hostile_page):
    text = hostile_page.read_text(encoding="utf-8")
    verdicts = text[text.index('<section id="verdicts">'):text.index('<section id="figures">')]
    assert "nonfinite" in verdicts and "Problems found" in verdicts


def test_a_rerun_replaces_old_figures_but_keeps_other_files(tmp_path):
    (tmp_path / "figures").mkdir()
    stale = tmp_path / "figures" / "07-timesteps-old.png"
    stale.write_bytes(b"old")
    mine = tmp_path / "figures" / "my notes.txt"
    mine.write_text("keep me")
    report(FakeSource(cell="GRU", layers=1, T=8, steps=1, jacobians=False, spectra=False), tmp_path)
    assert not stale.exists() and mine.read_text() == "keep me"


def test_a_failing_figure_is_left_out_with_a_warning(tmp_path):
    from gradscope.errors import GradscopeWarning
    from gradscope.reporting.plots import Plot
    from gradscope.reporting.plots.style import new_figure

    def broken(_):
        raise RuntimeError("boom")
        yield  # pragma: no cover

    def fine(_):
        fig, _ = new_figure()
        yield Plot("fine", "x", "Fine", "caption", fig)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written, failures = write_figures([broken, fine], None, tmp_path)
    assert [f.href for f in written] == ["figures/01-fine-x.png"]
    assert len(failures) == 1 and "boom" in failures[0]
    assert any(issubclass(w.category, GradscopeWarning) and "boom" in str(w.message) for w in caught)


@pytest.mark.parametrize("subject", ["", "a/b\\c", "../../etc/passwd", "é" * 80, "CON", "x" * 300, "$^*"])
def test_figure_names_are_safe_for_any_subject(subject):
    name = figure_name(3, "timesteps", subject)
    assert re.fullmatch(r"03-[a-z0-9_-]{1,48}\.png", name), name


def test_history_sampling_keeps_first_and_last_and_bounds_the_count():
    steps = np.arange(0, 100_000, 10)
    picked = evenly_spaced(steps, 400)
    assert len(picked) <= 400 and picked[0] == 0 and picked[-1] == steps[-1]
    assert np.all(np.diff(picked) > 0)
    assert list(evenly_spaced(np.arange(5), 400)) == list(range(5))


def test_heatmap_matrix_is_bounded_in_time_and_marks_zero_and_nonfinite():
    rows = pd.DataFrame({"step": np.repeat([0, 1], 1000), "t": np.tile(np.arange(1000), 2),
                         "grad_norm": np.tile(np.linspace(1.0, 2.0, 1000), 2)})
    rows.loc[0, "grad_norm"] = 0.0
    rows.loc[1, "grad_norm"] = np.nan
    steps, ts, logs = heatmap.log_matrix(rows)
    assert list(steps) == [0, 1] and len(ts) <= heatmap.MAX_T and ts[0] == 0 and ts[-1] == 999
    assert np.isneginf(logs[0, 0]) and np.isnan(logs[0, 1]) if ts[1] == 1 else np.isneginf(logs[0, 0])
    low, high = heatmap.color_range([logs])
    assert low == pytest.approx(0.0) and high == pytest.approx(np.log10(2.0))


def test_a_source_that_is_not_one_is_refused_clearly(tmp_path):
    with pytest.raises(TypeError, match="Scope, a Run"):
        report(object(), tmp_path)
    with pytest.raises(FileNotFoundError, match="run folder"):
        report(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_accepts_a_run_folder_path_and_a_loaded_run(tmp_path):
    import gradscope
    from test_report_fakes import write_run_folder

    folder = write_run_folder(FakeSource(name="stored", cell="RNN_TANH", layers=1, T=8, steps=2, jacobians=False),
                              tmp_path / "run")
    page = report(str(folder), tmp_path / "a")
    assert "stored" in page.read_text(encoding="utf-8")
    assert_valid_pngs(page)
    page_b = report(gradscope.load(folder), Path(tmp_path / "b"))
    assert image_sources(page_b.read_text(encoding="utf-8")) == image_sources(page.read_text(encoding="utf-8"))


def test_public_functions_survive_importing_their_packages_first(tmp_path):
    import importlib

    importlib.import_module("gradscope.reporting.plots")
    importlib.import_module("gradscope.analysis.rules")
    tiny = FakeSource(cell="GRU", layers=1, T=5, steps=1, jacobians=False, spectra=False)
    assert gradscope.report(tiny, tmp_path, title="pkg") == tmp_path / "index.html"
    assert gradscope.analyze(tiny).ok in (True, False)


def test_gain_over_training_is_drawn_from_the_per_step_diagnosis(lstm_page):
    assert "figures/02-gain-history-run.png" in image_sources(lstm_page.read_text(encoding="utf-8"))


def test_reporting_first_leaves_gradscope_analyze_callable(tmp_path):
    # a fresh interpreter: which of gradscope.analyze (function or package) Python binds
    # depends on what was imported first
    import subprocess
    import sys

    code = ("import gradscope; from test_report_fakes import FakeSource; "
            "s = FakeSource(cell='GRU', layers=1, T=5, steps=1, jacobians=False, spectra=False); "
            f"gradscope.report(s, {str(tmp_path)!r}); print(gradscope.analyze(s).ok)")
    import os

    # this checkout's gradscope, whichever one the interpreter has installed
    env = {**os.environ, "PYTHONPATH": str(Path(gradscope.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
