"""Every example in examples/ runs at its small size and measures what its docstring promises."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parts(diagnosis):
    summary = diagnosis.summary()
    return sorted(zip(summary["module"], summary["layer"], summary["direction"]))


def test_word_lm_records_both_lstm_layers_within_each_chunk(capsys):
    scope, diagnosis = load_example("word_lm").main(small=True)
    assert parts(diagnosis) == [("lstm", 0, "forward"), ("lstm", 1, "forward")]
    rows = scope.timesteps()
    assert set(rows["state"]) == {"h", "c"}
    # the state is detached between batches: each recorded step sees one bptt chunk, t = 0..19
    for _, step_rows in rows.groupby("step"):
        assert sorted(step_rows["t"].unique()) == list(range(20))
    assert "word LM" in capsys.readouterr().out


def test_bigru_records_both_directions_with_the_packed_batch_shrinking():
    scope, diagnosis = load_example("bigru_packed").main(small=True)
    assert parts(diagnosis) == [("gru", 0, "forward"), ("gru", 0, "reverse")]
    rows = scope.timesteps()
    per_t = rows[rows["direction"] == "forward"].groupby("t")["batch"].max()
    assert per_t.iloc[0] == 32 and per_t.iloc[-1] < 32


def test_rnn_from_scratch_is_tracked_and_its_tiny_weights_vanish():
    scope, diagnosis = load_example("rnn_from_scratch").main(small=True)
    rows = scope.timesteps()
    assert set(rows["module"]) == {"rnn"} and rows["carried_norm"].notna().all()
    assert set(scope.spectra()["gate"]) == {"rnn"}
    summary = diagnosis.summary()
    assert summary["verdict"].tolist() == ["vanishing"] and summary["gain"].iloc[0] < 0.5
    assert summary["method"].tolist() == ["ratio"] and summary["sigma_max"].iloc[0] < 1
    assert [f.module for f in diagnosis.by_kind("spectral_bound")] == ["rnn"]


def test_stacked_lstm_cells_are_found_as_two_modules_with_h_and_c():
    scope, diagnosis = load_example("stacked_lstm_cells").main(small=True)
    assert [p[0] for p in parts(diagnosis)] == ["cell1", "cell2"]
    rows = scope.timesteps()
    assert set(rows["state"]) == {"h", "c"}
    assert rows.groupby(["step", "module"])["t"].nunique().max() == 12


def test_long_training_writes_a_run_folder_and_renders_it(tmp_path):
    run_dir, code = load_example("long_training").main(small=True, out=tmp_path / "run")
    assert code == 0
    assert (run_dir / "meta.json").is_file()
    assert (run_dir / "report" / "index.html").is_file()


@pytest.mark.parametrize("name", ["word_lm", "bigru_packed", "rnn_from_scratch", "stacked_lstm_cells", "long_training"])
def test_every_example_has_a_small_flag(name):
    module = load_example(name)
    assert module.parse_args(["--small"]).small is True
    assert module.__doc__ and "--small" in module.__doc__
