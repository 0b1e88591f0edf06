"""Run folders give back exactly what was written: every table, the spectra, the meta."""

import warnings

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from gradscope.records import TABLES, frame
from gradscope.store import Run, RunWriter, load
from gradscope.store.synthetic import synthetic_meta, synthetic_step

AWKWARD = ("a,b", 'say "hi"', "new\nline", "cr\rlf\r\n", "", "nan", "NA", "None",
           "<script>alert(1)</script>", "ünï€😀", " padded ", "#hash", "tab\there", "1.5",
           "encoder.layers.0.rnn")


def write_run(path, steps, **kwargs):
    """Write synthetic steps; return what a live source would show: tables and values."""
    expected = {table: [] for table in TABLES}
    values = []
    modules = kwargs.get("modules", ("rnn",))
    with RunWriter(path, synthetic_meta("run", modules)) as writer:
        for step in steps:
            tables, step_values = synthetic_step(step, **kwargs)
            writer.write_step(step, tables, step_values)
            for table, df in tables.items():
                expected[table].append(df)
            values.extend(step_values)
    return {t: pd.concat(dfs, ignore_index=True) for t, dfs in expected.items()}, values


def test_every_table_round_trips_with_awkward_module_names(tmp_path):
    expected, _ = write_run(tmp_path / "run", [0, 1, 5], modules=AWKWARD, T=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact run loads without a word
        run = load(tmp_path / "run")
    assert isinstance(run, Run)
    for table in TABLES:
        got = getattr(run, table)()
        assert list(got.columns) == TABLES[table]
        pdt.assert_frame_equal(got, expected[table])
    # the awkward names and the NaN / infinite norms really are in there
    assert set(run.timesteps()["module"]) == set(AWKWARD)
    assert run.timesteps()["grad_norm"].isna().any()
    assert np.isinf(run.timesteps()["grad_norm"]).any()


def test_spectrum_round_trips_and_picks_gate_and_step(tmp_path):
    _, values = write_run(tmp_path / "run", [0, 3, 4], modules=("<m>", "x,y"), cell="GRU")
    run = load(tmp_path / "run")

    def stored(step, module, layer, gate):
        (v,) = [v for v in values if (v["step"], v["module"], v["layer"], v["gate"])
                == (step, module, layer, gate)]
        return v

    got = run.spectrum("x,y", layer=1)  # gate None -> "all", step -1 -> the latest
    want = stored(4, "x,y", 1, "all")
    np.testing.assert_array_equal(got["singular_values"], want["singular_values"])
    assert got["eigenvalues"].dtype == np.complex128
    np.testing.assert_array_equal(got["eigenvalues"].real, want["eigenvalues_real"])
    np.testing.assert_array_equal(got["eigenvalues"].imag, want["eigenvalues_imag"])

    got = run.spectrum("<m>", layer=0, gate="z", step=0)
    np.testing.assert_array_equal(got["singular_values"], stored(0, "<m>", 0, "z")["singular_values"])
    got = run.spectrum("<m>", gate="n", step=-2)  # second latest step that recorded it
    np.testing.assert_array_equal(got["singular_values"], stored(3, "<m>", 0, "n")["singular_values"])

    with pytest.raises(KeyError, match="no spectrum"):
        run.spectrum("missing")
    with pytest.raises(KeyError, match="step 2 is not in run"):
        run.spectrum("<m>", step=2)


def test_spectrum_without_all_takes_first_gate_and_keeps_infinite_parts(tmp_path):
    value = {"step": 0, "module": "m", "layer": 0, "direction": "reverse", "gate": "i",
             "singular_values": [np.inf, 1.0], "eigenvalues_real": [np.inf, -0.0],
             "eigenvalues_imag": [-np.inf, np.nan]}
    second = dict(value, gate="f", singular_values=[2.0, 1.0])
    with RunWriter(tmp_path / "run", synthetic_meta()) as writer:
        writer.write_step(0, {}, [value, second])
    got = load(tmp_path / "run").spectrum("m", direction="reverse")
    np.testing.assert_array_equal(got["singular_values"], [np.inf, 1.0])
    eig = got["eigenvalues"]
    assert eig[0].real == np.inf and eig[0].imag == -np.inf
    assert eig[1].real == 0.0 and np.signbit(eig[1].real) and np.isnan(eig[1].imag)


def test_empty_run_gives_typed_empty_tables(tmp_path):
    RunWriter(tmp_path / "run", synthetic_meta()).close()
    run = load(tmp_path / "run")
    assert run.steps() == []
    for table in TABLES:
        pdt.assert_frame_equal(getattr(run, table)(), frame(table))


def test_tables_may_be_absent_or_empty_in_a_step(tmp_path):
    full, values = synthetic_step(0)
    with RunWriter(tmp_path / "run", synthetic_meta()) as writer:
        writer.write_step(0, {"timesteps": full["timesteps"], "gates": frame("gates")}, [])
        writer.write_step(1, {"spectra": full["spectra"].assign(step=1)},
                          [dict(v, step=1) for v in values])
        writer.write_step(2, {})
    run = load(tmp_path / "run")
    assert run.steps() == [0, 1, 2]
    pdt.assert_frame_equal(run.timesteps(), full["timesteps"])
    pdt.assert_frame_equal(run.spectra(), full["spectra"].assign(step=1))
    pdt.assert_frame_equal(run.gates(), frame("gates"))
    assert run.spectrum("rnn", step=-1) is not None
    with pytest.raises(KeyError):
        run.spectrum("rnn", step=0)


def test_meta_and_name_round_trip(tmp_path):
    meta = synthetic_meta("<b>Ünï</b>", ("a", "b.c"))
    meta["every"] = 7
    with RunWriter(tmp_path / "folder", meta):
        pass
    run = load(tmp_path / "folder")
    assert run.meta == meta and run.name == "<b>Ünï</b>"
    assert run.path == tmp_path / "folder"
    del meta["name"]
    with RunWriter(tmp_path / "unnamed", meta):
        pass
    assert load(tmp_path / "unnamed").name == "unnamed"  # falls back on the folder's name


def test_update_meta_replaces_meta(tmp_path):
    with RunWriter(tmp_path / "run", synthetic_meta("first")) as writer:
        writer.update_meta(synthetic_meta("second", ("rnn", "decoder")))
    meta = load(tmp_path / "run").meta
    assert meta["name"] == "second" and set(meta["modules"]) == {"rnn", "decoder"}
    assert not (tmp_path / "run" / "meta.json.tmp").exists()


def test_reading_some_steps_some_columns_and_in_chunks(tmp_path):
    steps = list(range(0, 60, 3))
    expected, _ = write_run(tmp_path / "run", steps, T=11)
    run = load(tmp_path / "run")
    ts = expected["timesteps"]
    assert run.steps() == steps

    chosen = [3, 30, 57, 1000]  # 1000 is not in the run: skipped
    pdt.assert_frame_equal(run.timesteps(steps=chosen),
                           ts[ts["step"].isin(chosen)].reset_index(drop=True))
    pdt.assert_frame_equal(run.gates(steps=6), expected["gates"].query("step == 6").reset_index(drop=True))
    pdt.assert_frame_equal(run.timesteps(columns=["t", "module", "grad_norm"]),
                           ts[["t", "module", "grad_norm"]])
    pdt.assert_frame_equal(run.timesteps(steps=[1000], columns=["t"]), frame("timesteps")[["t"]])

    chunks = list(run.iter_table("timesteps", chunk_bytes=4000))
    assert len(chunks) > 3
    seen = [set(c["step"]) for c in chunks]
    assert all(a.isdisjoint(b) for a, b in zip(seen, seen[1:]))  # whole steps per chunk
    pdt.assert_frame_equal(pd.concat(chunks, ignore_index=True), ts)

    assert run.row_count("timesteps") == len(ts)
    assert run.row_count("spectra", steps=[0, 3]) == len(expected["spectra"].query("step <= 3"))
    sample = run.sample_steps(5)
    assert len(sample) == 5 and sample[0] == 0 and sample[-1] == 57
    assert run.sample_steps(500) == steps
    with pytest.raises(ValueError, match="no column"):
        run.timesteps(columns=["nope"])
    with pytest.raises(ValueError, match="unknown table"):
        run.table("nope")


def test_plain_pandas_reads_the_files(tmp_path):
    expected, _ = write_run(tmp_path / "run", [0, 1], modules=("a,b", "new\nline"), T=5)
    raw = pd.read_csv(tmp_path / "run" / "timesteps.csv")
    assert list(raw.columns) == TABLES["timesteps"]
    assert list(raw["module"]) == list(expected["timesteps"]["module"])
    np.testing.assert_array_equal(raw["grad_norm"], expected["timesteps"]["grad_norm"])


def test_numeric_columns_are_written_with_schema_dtypes(tmp_path):
    tables, _ = synthetic_step(0)
    loose = tables["timesteps"].astype({"layer": "float64", "batch": "float64"})
    loose = loose[list(reversed(loose.columns))]  # any column order
    with RunWriter(tmp_path / "run", synthetic_meta()) as writer:
        writer.write_step(0, {"timesteps": loose})
    pdt.assert_frame_equal(load(tmp_path / "run").timesteps(), tables["timesteps"])
