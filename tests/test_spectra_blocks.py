"""Weight blocks and their full spectra against numpy on slices taken by hand."""

import numpy as np
import pytest
import torch

from gradscope.cells import module_weights
from gradscope.records import SPECTRA_COLUMNS
from gradscope.spectra.blocks import (block_spectrum, labelled_records, recurrent_blocks,
                               spectra_records, spectrum_value)

VALUE_KEYS = {"step", "module", "layer", "direction", "gate", "singular_values",
              "eigenvalues_real", "eigenvalues_imag"}


def numpy_summary(w):
    w = np.asarray(w, dtype=np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    radius = np.abs(np.linalg.eigvals(w)).max() if w.shape[0] == w.shape[1] else np.nan
    fro = np.linalg.norm(w)
    return {"rows": w.shape[0], "cols": w.shape[1], "sigma_max": s[0], "sigma_min": s[-1],
            "spectral_radius": radius, "stable_rank": fro ** 2 / s[0] ** 2, "frobenius": fro}


def hand_blocks(module, kind, layer, direction):
    sfx = f"_l{layer}" + ("_reverse" if direction == "reverse" else "")
    w_hh = getattr(module, "weight_hh" + sfx).detach().double().numpy()
    gates = {"RNN_TANH": ["hh"], "RNN_RELU": ["hh"], "GRU": ["r", "z", "n"],
             "LSTM": ["i", "f", "g", "o"]}[kind]
    size = w_hh.shape[0] // len(gates)
    maps = {g: w_hh[i * size:(i + 1) * size] for i, g in enumerate(gates)}
    if getattr(module, "proj_size", 0):
        w_hr = getattr(module, "weight_hr" + sfx).detach().double().numpy()
        maps = {g: w_hr @ m for g, m in maps.items()}
        maps["all"] = np.vstack([maps[g] for g in gates])
    else:
        maps["all"] = w_hh
    return maps


MODULES = [
    ("RNN_TANH", lambda: torch.nn.RNN(3, 6)),
    ("RNN_RELU", lambda: torch.nn.RNN(3, 6, nonlinearity="relu", num_layers=2)),
    ("GRU", lambda: torch.nn.GRU(3, 5, bidirectional=True)),
    ("LSTM", lambda: torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True)),
    ("LSTM", lambda: torch.nn.LSTM(3, 6, proj_size=4, bidirectional=True)),
]


@pytest.mark.parametrize("kind,make", MODULES, ids=["rnn", "rnn-relu-2l", "gru-bi", "lstm-2l-bi",
                                                     "lstm-proj-bi"])
@pytest.mark.parametrize("full", [True, False])
def test_every_block_matches_numpy_on_the_hand_slice(kind, make, full):
    torch.manual_seed(0)
    module = make()
    directions = ["forward", "reverse"] if module.bidirectional else ["forward"]
    for layer in range(module.num_layers):
        for direction in directions:
            weights = module_weights(module, layer, direction)
            rows, values = spectra_records(7, "enc", layer, direction, kind, weights, full=full)
            expected = hand_blocks(module, kind, layer, direction)
            assert [r["gate"] for r in rows] == list(expected)
            assert len(values) == (len(rows) if full else 0)
            for row in rows:
                assert list(row)[:len(SPECTRA_COLUMNS)] == SPECTRA_COLUMNS
                assert (row["step"], row["module"], row["layer"], row["direction"]) == \
                    (7, "enc", layer, direction)
                want = numpy_summary(expected[row["gate"]])
                for key, value in want.items():
                    if np.isnan(value):
                        assert np.isnan(row[key]), (row["gate"], key)
                    else:
                        assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), \
                            (row["gate"], key)
            for value in values:
                assert set(value) == VALUE_KEYS
                block = expected[value["gate"]]
                np.testing.assert_allclose(value["singular_values"],
                                           np.linalg.svd(block, compute_uv=False), rtol=1e-10)
                if block.shape[0] == block.shape[1]:
                    got = np.sort_complex(np.array(value["eigenvalues_real"])
                                          + 1j * np.array(value["eigenvalues_imag"]))
                    np.testing.assert_allclose(got, np.sort_complex(np.linalg.eigvals(block)),
                                               atol=1e-10)
                else:
                    assert value["eigenvalues_real"] == [] and value["eigenvalues_imag"] == []


def test_projection_maps_are_p_by_p_and_all_stacks_them():
    lstm = torch.nn.LSTM(3, 6, proj_size=4)
    blocks = dict(recurrent_blocks("LSTM", module_weights(lstm)))
    assert list(blocks) == ["i", "f", "g", "o", "all"]
    assert all(blocks[g].shape == (4, 4) for g in "ifgo")
    assert blocks["all"].shape == (16, 4)
    w_hr, w_hh = lstm.weight_hr_l0.detach(), lstm.weight_hh_l0.detach()
    torch.testing.assert_close(blocks["f"], w_hr @ w_hh[6:12])


def test_rnn_has_hh_and_all_as_the_same_matrix():
    rnn = torch.nn.RNN(2, 4)
    blocks = recurrent_blocks("RNN_TANH", module_weights(rnn))
    assert [g for g, _ in blocks] == ["hh", "all"]
    assert torch.equal(blocks[0][1], blocks[1][1])
    rows, _ = spectra_records(0, "", 0, "forward", "RNN_TANH", module_weights(rnn))
    assert {k: v for k, v in rows[0].items() if k != "gate"} == \
        {k: v for k, v in rows[1].items() if k != "gate"}


def test_orthogonal_parametrization_gives_unit_singular_values_and_radius():
    torch.manual_seed(1)
    rnn = torch.nn.RNN(3, 8)
    torch.nn.utils.parametrizations.orthogonal(rnn, "weight_hh_l0")
    for full in (True, False):
        rows, _ = spectra_records(0, "", 0, "forward", "RNN_TANH", module_weights(rnn), full=full)
        for row in rows:
            assert row["sigma_max"] == pytest.approx(1, abs=1e-6)
            assert row["sigma_min"] == pytest.approx(1, abs=1e-6)
            assert row["spectral_radius"] == pytest.approx(1, abs=1e-6)
            assert row["stable_rank"] == pytest.approx(8, rel=1e-5)


def test_weights_are_detached_and_untouched():
    lstm = torch.nn.LSTM(3, 5)
    before = {k: v.clone() for k, v in lstm.state_dict().items()}
    rows, values = spectra_records(0, "", 0, "forward", "LSTM", module_weights(lstm))
    assert all(isinstance(v, float) for r in rows for k, v in r.items() if k in
               ("sigma_max", "sigma_min", "spectral_radius", "stable_rank", "frobenius"))
    for key, value in lstm.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in lstm.parameters())


def test_float64_and_float16_weights():
    gru = torch.nn.GRU(2, 5).double()
    rows, _ = spectra_records(0, "", 0, "forward", "GRU", module_weights(gru))
    w = gru.weight_hh_l0.detach().numpy()
    assert rows[1]["sigma_max"] == pytest.approx(np.linalg.svd(w[5:10], compute_uv=False)[0])
    half = torch.nn.RNN(2, 4).half()
    rows, _ = spectra_records(0, "", 0, "forward", "RNN_TANH", module_weights(half))
    w = half.weight_hh_l0.detach().double().numpy()
    assert rows[0]["sigma_min"] == pytest.approx(np.linalg.svd(w, compute_uv=False)[-1])


def test_labelled_weight_gets_one_row_with_its_label():
    matrix = torch.nn.Parameter(torch.randn(5, 5))
    rows, values = labelled_records(3, "decoder.W", matrix)
    assert len(rows) == 1 and len(values) == 1
    row = rows[0]
    assert (row["step"], row["module"], row["gate"], row["layer"], row["direction"]) == \
        (3, "decoder.W", "decoder.W", 0, "forward")
    assert row["sigma_max"] == pytest.approx(np.linalg.svd(matrix.detach().numpy(),
                                                          compute_uv=False)[0], rel=1e-6)
    assert values[0]["module"] == "decoder.W" and values[0]["gate"] == "decoder.W"
    with pytest.raises(ValueError, match="2-D"):
        labelled_records(0, "bias", torch.zeros(4))


def test_non_square_labelled_weight_has_nan_radius_both_routes():
    w = torch.randn(3, 7, dtype=torch.float64)
    for full in (True, False):
        row = labelled_records(0, "wide", w, full=full)[0][0]
        want = numpy_summary(w.numpy())
        assert np.isnan(row["spectral_radius"])
        assert row["sigma_min"] == pytest.approx(want["sigma_min"], rel=1e-9)
        assert row["sigma_max"] == pytest.approx(want["sigma_max"], rel=1e-9)


def test_zero_and_nonfinite_blocks():
    zero = block_spectrum(torch.zeros(4, 4))
    assert zero["sigma_max"] == 0 and zero["spectral_radius"] == 0
    assert np.isnan(zero["stable_rank"])
    bad = torch.eye(4)
    bad[1, 2] = float("nan")
    for full in (True, False):
        rows, values = labelled_records(0, "bad", bad, full=full)
        assert all(np.isnan(rows[0][k]) for k in ("sigma_max", "sigma_min", "spectral_radius",
                                                   "frobenius"))
        assert rows[0]["rows"] == 4
    assert block_spectrum(bad)["singular_values"].size == 0


def test_eigenvalues_come_by_decreasing_modulus_and_spectrum_value_is_full():
    w = torch.tensor([[0.0, -2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    spectrum = block_spectrum(w)
    assert np.allclose(np.abs(spectrum["eigenvalues"]), [2, 2, 0.5])
    assert spectrum["eigenvalues"].dtype == np.complex128
    assert spectrum["singular_values"].dtype == np.float64
    value = spectrum_value(4, "m", 1, "reverse", "hh", w)
    assert set(value) == VALUE_KEYS and value["layer"] == 1
    assert value["singular_values"] == pytest.approx([2, 2, 0.5])


def test_unknown_kind_and_bad_full_flag_say_what_to_pass():
    with pytest.raises(ValueError, match="unknown cell kind"):
        recurrent_blocks("LSTMX", {"w_hh": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match="w_hh"):
        recurrent_blocks("GRU", {"w_hh": None})
    with pytest.raises(ValueError, match="full must be"):
        labelled_records(0, "x", torch.eye(2), full="yes")
