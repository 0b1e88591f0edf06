"""What the report figures draw, read back from the matplotlib Figures: axes that fit the data
(a flat spectrum looks flat, ticks cover the values), bars that show what the verdict rests on,
one meaning per colour, zeros and outliers marked instead of silently dropped, captions that
match the figure, and a summary table that fits a 1400 px window."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from gradscope.reporting import report
from gradscope.reporting.plots import gain, gain_history, gates, spectrum, style, timesteps
from gradscope.reporting.sources import collect
from test_report_fakes import FakeSource
from test_report_real import browser_missing

FLOAT32_TINY = 1.4e-45  # below this a float32 gradient norm is stored as exactly 0


def visible_ticks(ax):
    low, high = ax.get_ylim()
    return [t for t in ax.get_yticks() if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]


def tick_labels(ax):
    formatter = ax.yaxis.get_major_formatter()
    ticks = visible_ticks(ax)
    formatter.set_locs(ticks)
    return [formatter(t, i) for i, t in enumerate(ticks)]


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def one_plot(producer, data):
    plots = list(producer(data))
    assert len(plots) == 1
    return plots[0]


def underflowing(source):
    """``source`` with its norms stored as float32 would store them: tiny ones become 0."""
    rows = source._tables["timesteps"]
    for column in ("grad_norm", "carried_norm"):
        rows.loc[rows[column] < FLOAT32_TINY, column] = 0.0
    return source


# 12.7: a flat spectrum must look flat ------------------------------------------------------

def test_an_orthogonal_spectrum_gets_an_axis_at_least_twice_as_tall_as_its_values_with_distinct_ticks():
    fig, axes = style.new_figure(1, 1)
    ax = axes[0, 0]
    values = 1.0 + 1e-7 * np.random.default_rng(0).standard_normal(16)  # orthogonal W_hh in float32
    spectrum.draw_singular_values(ax, [("gate hh", "#444444", values)])
    low, high = ax.get_ylim()
    assert high / low >= 2.0
    labels = tick_labels(ax)
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert "1" in labels


def test_a_spread_spectrum_keeps_its_own_range():
    fig, axes = style.new_figure(1, 1)
    ax = axes[0, 0]
    spectrum.draw_singular_values(ax, [("gate hh", "#444444", np.geomspace(0.05, 3.0, 16))])
    low, high = ax.get_ylim()
    assert 0.03 < low <= 0.05 and 3.0 <= high < 6.0


# 15.8: the gain figure shows what the verdict rests on, colours mean runs --------------------

@pytest.fixture(scope="module")
def improving_runs():
    """A run that starts vanishing and ends healthy (its pooled gain is far below its latest),
    next to a steadily vanishing one."""
    improving = collect(FakeSource(name="LSTM", cell="LSTM", layers=1, T=30, steps=6, gain=0.6, drift=1.66))
    weak = collect(FakeSource(name="RNN", cell="RNN_TANH", layers=1, T=30, steps=6, gain=0.5))
    return [weak, improving]


def bar_tops(ax):
    return [r.get_y() + r.get_height() for r in ax.patches if isinstance(r, Rectangle)]


def test_gain_bars_show_the_latest_step_the_verdict_follows_and_mark_the_pooled_value(improving_runs):
    weak, improving = improving_runs
    latest = improving.diagnosis.per_step().sort_values("step").iloc[-1]
    pooled = float(improving.summary["gain_pooled"].iloc[0])
    assert improving.summary["verdict"].iloc[0] == latest["verdict"] == "healthy"
    assert pooled < float(latest["gain"]) - 0.05  # the case of issue 15 item 8
    plot = one_plot(gain.compare_figures, improving_runs)
    gain_ax, horizon_ax = plot.figure.axes[:2]
    assert bar_tops(gain_ax)[1] == pytest.approx(float(latest["gain"]))
    assert bar_tops(horizon_ax)[1] == pytest.approx(min(float(latest["horizon"]), horizon_ax.get_ylim()[1]))
    pooled_marks = [line for line in gain_ax.lines if line.get_marker() == "D"]
    assert [m.get_ydata()[0] for m in pooled_marks] == pytest.approx(
        [float(weak.summary["gain_pooled"].iloc[0]), pooled])
    assert "latest recorded step" in plot.caption and "pooled" in plot.caption


def test_gain_bars_take_their_run_colour_and_show_the_verdict_by_hatching_and_words(improving_runs):
    plot = one_plot(gain.compare_figures, improving_runs)
    gain_ax = plot.figure.axes[0]
    bars = [r for r in gain_ax.patches if isinstance(r, Rectangle)]
    assert [to_hex(b.get_facecolor()) for b in bars] == [style.series_color(0), style.series_color(1)]
    assert [bool(b.get_hatch()) for b in bars] == [True, False]  # vanishing RNN, healthy LSTM
    words = texts(plot.figure)
    assert any("vanishing" in w for w in words) and any("healthy" in w for w in words)


def test_the_gain_axis_fits_the_gains_instead_of_reaching_to_2(improving_runs):
    plot = one_plot(gain.compare_figures, improving_runs)
    low, high = plot.figure.axes[0].get_ylim()
    assert high < 1.2  # every gain is below 1
    tops = bar_tops(plot.figure.axes[0])
    assert low < min(tops) and min(tops) / low < 1.6


# 15.9: layers of one run differ, ticks cover the data, legend sits on the plot ----------------

@pytest.fixture(scope="module")
def two_layer_history():
    runs = [collect(FakeSource(name="RNN", cell="RNN_TANH", layers=2, T=20, steps=5, gain=0.25, drift=2.0)),
            collect(FakeSource(name="GRU", cell="GRU", layers=2, T=20, steps=5, gain=0.9))]
    return one_plot(gain_history.compare_figures, runs).figure


def data_lines(ax):
    return [line for line in ax.lines if line.get_label().startswith(("RNN", "GRU"))]


def test_layers_of_one_run_share_its_colour_but_not_their_line_style(two_layer_history):
    lines = {line.get_label(): line for line in data_lines(two_layer_history.axes[0])}
    for run, colour in (("RNN", style.series_color(0)), ("GRU", style.series_color(1))):
        first, second = lines[f"{run} · layer 0"], lines[f"{run} · layer 1"]
        assert to_hex(first.get_color()) == to_hex(second.get_color()) == colour
        assert (first.get_linestyle(), first.get_marker()) != (second.get_linestyle(), second.get_marker())


def test_gain_ticks_reach_below_the_lowest_gain_drawn(two_layer_history):
    ax = two_layer_history.axes[0]
    gains = np.concatenate([line.get_ydata() for line in data_lines(ax)])
    ticks = visible_ticks(ax)
    assert gains.min() < 0.3  # the RNN falls to about 0.25
    assert min(ticks) <= gains.min() and max(ticks) >= gains.max()
    assert len(set(tick_labels(ax))) == len(ticks)


def test_the_figure_legend_sits_just_above_the_panels(two_layer_history):
    fig = two_layer_history
    renderer = FigureCanvasAgg(fig).get_renderer()
    legend_bottom = fig.legends[0].get_window_extent(renderer).y0
    axes_top = max(ax.get_window_extent(renderer).y1 for ax in fig.axes)
    assert 0 < (legend_bottom - axes_top) / fig.dpi < 0.3  # inches of empty band


# 15.10: a curve that underflows to 0 is marked, not silently cut -------------------------------

@pytest.fixture(scope="module")
def underflow_runs():
    return [collect(underflowing(FakeSource(name="RNN", cell="RNN_TANH", layers=1, T=60, steps=2, gain=0.1))),
            collect(FakeSource(name="GRU", cell="GRU", layers=1, T=60, steps=2, gain=0.95))]


def zero_markers(ax):
    return [line for line in ax.lines if line.get_marker() == "v"]


def test_the_compare_figure_marks_where_a_run_s_gradient_is_exactly_zero(underflow_runs):
    rnn = underflow_runs[0].last
    zero_t = sorted(rnn.loc[rnn["grad_norm"] == 0, "t"])
    assert zero_t and zero_t[0] == 0  # going back from the loss at t=59, float32 runs out
    fig = one_plot(timesteps.compare_figures, underflow_runs).figure
    (marks,) = zero_markers(fig.axes[0])
    assert list(marks.get_xdata()) == zero_t
    assert to_hex(marks.get_color()) == style.series_color(0)
    assert any("below the float range" in w and f"t 0–{zero_t[-1]}" in w for w in texts(fig))


def test_the_single_run_figure_marks_the_zero_total_too(underflow_runs):
    plot = next(iter(timesteps.figures(underflow_runs[0])))
    assert zero_markers(plot.figure.axes[0])
    assert any("below the float range" in w for w in texts(plot.figure))


# 15.11: distinct reference lines, eigenvalue axes around the bulk ------------------------------

def test_sigma_one_and_the_unit_circle_look_different_in_the_shared_legend():
    fig, axes = style.new_figure(1, 2)
    spectrum.draw_singular_values(axes[0, 0], [("gate hh", "#444444", np.geomspace(0.1, 2, 8))])
    spectrum.draw_eigenvalues(axes[0, 1], [("gate hh", "#444444", np.array([0.5, -0.3j, 0.2 + 0.1j]))])
    legend = style.figure_legend(fig, axes.flat)
    handles = dict(zip([t.get_text() for t in legend.get_texts()], legend.legend_handles))
    sigma, circle = handles["σ = 1"], handles["unit circle"]
    assert (sigma.get_linestyle(), to_hex(sigma.get_color())) != (circle.get_linestyle(), to_hex(circle.get_color()))
    assert sigma.get_linestyle() != circle.get_linestyle()


def test_eigenvalue_axes_frame_the_bulk_and_put_outliers_on_the_edge():
    rng = np.random.default_rng(0)
    bulk = 0.8 * np.sqrt(rng.uniform(size=30)) * np.exp(2j * np.pi * rng.uniform(size=30))
    values = np.concatenate([bulk, [1.3 + 7j, 1.3 - 7j]])  # the trained RNN of issue 15 item 11
    fig, axes = style.new_figure(1, 1)
    ax = axes[0, 0]
    spectrum.draw_eigenvalues(ax, [("gate hh", "#444444", values)])
    lim = ax.get_xlim()[1]
    assert 1.0 < lim < 2.0 and ax.get_ylim() == (-lim, lim)
    edge = [c for c in ax.collections if len(c.get_offsets()) and c.get_offsets().data.shape[0] == 2]
    assert edge and np.allclose(np.abs(edge[0].get_offsets().data[:, 1]), lim)
    assert any("2 beyond the axes" in w and "7.12" in w for w in texts(fig))


def test_eigenvalues_close_to_the_bulk_are_all_framed():
    values = np.array([0.5, -0.4 + 0.3j, -0.4 - 0.3j, 1.8, 0.1j, -0.1j, 0.2, -0.6, 0.3 + 0.5j, 0.3 - 0.5j])
    fig, axes = style.new_figure(1, 1)
    spectrum.draw_eigenvalues(axes[0, 0], [("gate f", "#ff7f0e", values)])
    assert axes[0, 0].get_xlim()[1] >= 1.8
    assert not [w for w in texts(fig) if "beyond" in w]


# 15.12: the single-run page: gates without saturation, captions, table width ------------------

def test_a_gate_chart_with_nothing_saturated_says_so():
    source = FakeSource(name="LSTM", cell="LSTM", layers=1, T=10, steps=1)
    source._tables["gates"][["low", "high"]] = 0.0
    plot = one_plot(gates.figures, collect(source))
    assert any(w.startswith("no saturation") for w in texts(plot.figure))


def test_a_gate_chart_with_a_saturated_gate_has_no_such_note():
    source = FakeSource(name="LSTM", cell="LSTM", layers=1, T=10, steps=1)
    source._tables["gates"]["high"] = 0.7
    plot = one_plot(gates.figures, collect(source))
    assert not any("no saturation" in w for w in texts(plot.figure))


@pytest.mark.parametrize("steps, band", [(1, False), (3, True)])
def test_the_timestep_caption_names_the_grey_band_only_when_it_is_drawn(steps, band):
    run = collect(FakeSource(name="GRU", cell="GRU", layers=1, T=10, steps=steps))
    plot = next(iter(timesteps.figures(run)))
    drawn = any(type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")
                for c in plot.figure.axes[0].collections)
    assert drawn == band
    assert ("grey band" in plot.caption) == band


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_the_summary_table_fits_a_1400_px_window(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    from test_report_real import CHROMEDRIVER
    import shutil

    source = FakeSource(name="wide", cell="LSTM", modules=("encoder.sequence_model.bidirectional_lstm_stack",),
                        layers=2, directions=("forward", "reverse"), T=12, steps=2, gain=0.9)
    page = report(source, tmp_path / "report")
    options = Options()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver_path = str(CHROMEDRIVER) if CHROMEDRIVER.exists() else shutil.which("chromedriver")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(page.resolve().as_uri())
        widths = driver.execute_script(
            "return Array.from(document.querySelectorAll('.table-wrap')).map(w => [w.scrollWidth, w.clientWidth])")
    finally:
        driver.quit()
    assert widths and all(scroll <= client for scroll, client in widths), widths
