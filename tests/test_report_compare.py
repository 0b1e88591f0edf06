"""compare() and the CLI commands `gradscope report` and `gradscope compare`."""

import argparse
import re

import pytest

import gradscope
from gradscope.commands import compare as compare_command
from gradscope.commands import report as report_command
from gradscope.reporting import compare
from test_report_fakes import FakeSource, write_run_folder
from test_report_render import HOSTILE_RUN, assert_valid_pngs, image_sources


def small(name, cell, gain):
    return FakeSource(name=name, cell=cell, layers=1, T=12, steps=2, gain=gain, jacobians=True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {name: write_run_folder(small(name.lower(), cell, gain), root / name.lower())
            for name, cell, gain in (("RNN", "RNN_TANH", 0.4), ("GRU", "GRU", 0.9))}


@pytest.fixture(scope="module")
def three_runs_page(folders, tmp_path_factory):
    # one source of each kind: a run folder path, a loaded Run, a live-like object
    runs = {"RNN": str(folders["RNN"]), "GRU": gradscope.load(folders["GRU"]), HOSTILE_RUN: small("x", "LSTM", 0.97)}
    return compare(runs, tmp_path_factory.mktemp("cmp"))


def test_compare_writes_one_page_with_every_run(three_runs_page):
    text = three_runs_page.read_text(encoding="utf-8")
    verdicts = text[text.index('<section id="verdicts">'):text.index('<section id="figures">')]
    assert verdicts.count("<h3>") == 3 and "<h3>RNN</h3>" in verdicts and "<h3>GRU</h3>" in verdicts
    tables = text[text.index('<section id="tables">'):text.index('<section id="reading">')]
    for name in ("RNN", "GRU", "&lt;script&gt;alert(1)&lt;/script&gt;"):
        assert f">{name}</td>" in tables
    assert HOSTILE_RUN not in text


def test_compare_overlays_the_runs_in_valid_pngs(three_runs_page):
    sources = assert_valid_pngs(three_runs_page)
    assert {"gain", "timesteps", "heatmap", "spectrum", "jacobians", "lyapunov"} <= {
        re.sub(r"^figures/\d+-([a-z]+)-.*", r"\1", s) for s in sources}


def test_the_weak_rnn_is_the_one_judged_vanishing(three_runs_page):
    text = three_runs_page.read_text(encoding="utf-8")
    rows = [r for r in re.findall(r"<tr>(.*?)</tr>", text[text.index('<section id="tables">'):]) if "<td" in r]
    verdict_of = {re.search(r">([^<]*)</td>", r).group(1): re.findall(r'verdict-[a-z]+"[^>]*>([a-z]+)<', r)[0] for r in rows}
    assert verdict_of["RNN"] == "vanishing" and verdict_of["GRU"] == "healthy"


def test_compare_refuses_what_is_not_a_mapping_of_runs(tmp_path):
    with pytest.raises(TypeError, match="mapping of name"):
        compare([small("a", "GRU", 0.9)], tmp_path)
    with pytest.raises(TypeError, match="mapping of name"):
        compare({}, tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Run folders with one step and no spectra or Jacobians: few figures, fast CLI tests."""
    root = tmp_path_factory.mktemp("tiny")
    return {cell: write_run_folder(FakeSource(name=cell.lower(), cell=cell, layers=1, T=6, steps=1,
                                              jacobians=False, spectra=False), root / cell.lower())
            for cell in ("GRU", "LSTM")}


def parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_report_command_renders_a_run_folder_into_run_dir_report(tiny, capsys):
    code = report_command.run(parse(report_command, [str(tiny["GRU"]), "--title", "T<1>"]))
    page = tiny["GRU"] / "report" / "index.html"
    assert code == 0 and capsys.readouterr().out.strip() == str(page)
    assert "T&lt;1&gt;" in page.read_text(encoding="utf-8")
    assert gradscope.load(tiny["GRU"]).steps() == [0]  # the run folder still loads


def test_report_command_says_what_is_wrong_with_a_missing_folder(tmp_path, capsys):
    code = report_command.run(parse(report_command, [str(tmp_path / "nope")]))
    assert code == 2 and "nope" in capsys.readouterr().err


def test_compare_command_names_runs_and_keeps_their_order(tiny, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = parse(compare_command, [f"Gated={tiny['GRU']}", str(tiny["LSTM"]), "--out", str(out)])
    assert compare_command.run(args) == 0
    text = (out / "index.html").read_text(encoding="utf-8")
    assert text.index("<h3>Gated</h3>") < text.index("<h3>lstm</h3>")
    assert image_sources(text)


@pytest.mark.parametrize("argv, message", [(["A=x", "A=y"], "twice"), (["=x"], "NAME=RUN_DIR"),
                                           (["A=/no/such/run"], "does not exist")])
def test_compare_command_rejects_bad_arguments_with_exit_2(argv, message, tmp_path, capsys):
    code = compare_command.run(parse(compare_command, argv + ["--out", str(tmp_path)]))
    assert code == 2 and message in capsys.readouterr().err


def test_the_gradscope_command_line_dispatches_report_and_compare(tiny, tmp_path, capsys):
    from gradscope.cli import main

    assert main(["report", str(tiny["LSTM"]), "--out", str(tmp_path / "r")]) == 0
    assert main(["compare", f"A={tiny['GRU']}", f"B={tiny['LSTM']}", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "r" / "index.html").is_file() and (tmp_path / "c" / "index.html").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
