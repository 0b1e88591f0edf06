"""The fast route (extreme values only) agrees with LAPACK in float64, falls back when it must."""

import math

import numpy as np
import pytest
import torch

from gradscope.spectra import blocks as spectra
from gradscope.spectra.blocks import block_spectrum, block_summary, spectra_records

COLUMNS = ("sigma_max", "sigma_min", "spectral_radius", "stable_rank", "frobenius")


def uniform(n, seed, rows=None):
    # PyTorch's own recurrent init: a crowded circular-law spectrum, the hard case for radii
    g = torch.Generator().manual_seed(seed)
    bound = n ** -0.5
    return (torch.rand(rows or n, n, generator=g) * 2 - 1) * bound


def low_rank_bump(n, seed):
    # a trained-looking matrix: random bulk plus a few strong directions
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(n, 3, generator=g), torch.randn(3, n, generator=g)
    return uniform(n, seed) + 0.4 * (u @ v) / n


def assert_agrees(matrix, rel=1e-6):
    exact = block_spectrum(matrix)
    summary, spectrum = block_summary(matrix, full=False)
    for key in COLUMNS:
        if np.isnan(exact[key]):
            assert np.isnan(summary[key]), key
        else:
            assert summary[key] == pytest.approx(exact[key], rel=rel), key
    return spectrum


@pytest.mark.parametrize("make", [uniform, low_rank_bump], ids=["pytorch-init", "bulk+spikes"])
def test_fast_route_matches_lapack_on_the_squaring_path(make):
    # n > the Ritz width (96), so the radius really comes from the squarings
    matrix = make(160, seed=3)
    assert assert_agrees(matrix) is None  # taken by the fast route, not the fallback


def test_fast_route_on_a_symmetric_block_takes_the_exact_shortcut():
    a = uniform(120, seed=4)
    assert assert_agrees((a + a.T) / 2) is None


def test_tall_stacked_block_uses_both_ends_of_one_lanczos_run():
    assert assert_agrees(uniform(100, seed=5, rows=400)) is None


def test_orthogonal_cluster_falls_back_to_lapack_and_stays_exact():
    # every singular value equal to 1 within float32 rounding: Lanczos cannot separate them
    q = torch.linalg.qr(torch.randn(130, 130, generator=torch.Generator().manual_seed(6))).Q
    spectrum = assert_agrees(q, rel=1e-12)
    assert spectrum is not None and len(spectrum["singular_values"]) == 130


def test_nilpotent_block_falls_back():
    w = torch.triu(torch.randn(110, 110, generator=torch.Generator().manual_seed(7)), 1)
    summary, spectrum = block_summary(w, full=False)
    assert spectrum is not None  # the squarings hit exact zero: LAPACK decides
    assert summary["spectral_radius"] == pytest.approx(
        np.abs(np.linalg.eigvals(w.double().numpy())).max(), abs=1e-12)


def test_singular_square_blocks_give_sigma_min_zero():
    w = uniform(100, seed=8).double()
    w[:, 0] = w[:, 1]  # singular up to rounding: the LU still inverts it
    summary, _ = block_summary(w, full=False)
    assert summary["sigma_min"] == pytest.approx(0, abs=1e-12)
    w[:, 0] = 0  # an exact zero pivot: LAPACK's SVD takes over
    summary, spectrum = block_summary(w, full=False)
    assert spectrum is not None and summary["sigma_min"] == pytest.approx(0, abs=1e-12)


def test_auto_takes_the_full_route_for_small_blocks_only(monkeypatch):
    lstm = torch.nn.LSTM(2, 12)
    weights = spectra.recurrent_blocks("LSTM", {"w_hh": lstm.weight_hh_l0})
    assert len(weights) == 5
    monkeypatch.setattr(spectra, "FULL_SPECTRUM_MAX", 8)
    rows, values = spectra_records(0, "", 0, "forward", "LSTM", {"w_hh": lstm.weight_hh_l0})
    assert values == [] and len(rows) == 5
    monkeypatch.setattr(spectra, "FULL_SPECTRUM_MAX", 12)
    rows, values = spectra_records(0, "", 0, "forward", "LSTM", {"w_hh": lstm.weight_hh_l0})
    assert [v["gate"] for v in values] == ["i", "f", "g", "o", "all"]


def test_fast_route_is_reproducible_and_leaves_the_global_rng_alone():
    matrix = uniform(150, seed=9)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = block_summary(matrix, full=False)[0]
    assert torch.equal(torch.rand(3), expected_next)
    assert block_summary(matrix, full=False)[0] == first


def test_reduced_precision_float32_matmul_switches_the_squarings_to_float64():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert spectra._squaring_dtype(torch.zeros(2, 2, dtype=torch.float64)) == torch.float64
        assert_agrees(uniform(140, seed=10))
    finally:
        torch.set_float32_matmul_precision(before)
    assert spectra._squaring_dtype(torch.zeros(2, 2, dtype=torch.float64)) == torch.float32


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 5), (7, 3), (9, 9)])
def test_fast_route_on_tiny_blocks(shape):
    g = torch.Generator().manual_seed(sum(shape))
    assert_agrees(torch.randn(*shape, generator=g, dtype=torch.float64), rel=1e-9)


@pytest.mark.parametrize("precision", ["highest", "medium"])
def test_fast_route_never_modifies_the_block(precision):
    # the squarings scale a copy in place: with float64 products that copy must not be w itself
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(precision)
        w = uniform(130, seed=11).double()
        kept = w.clone()
        block_summary(w, full=False)
        assert torch.equal(w, kept)
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("proj_size", [0, 20])
def test_shared_gram_of_the_stacked_block_matches_lapack(monkeypatch, proj_size):
    # spectra_records forms each gate's Gram once and sums them for "all"
    monkeypatch.setattr(spectra, "FULL_SPECTRUM_MAX", 8)
    torch.manual_seed(12)
    lstm = torch.nn.LSTM(3, 48, proj_size=proj_size)
    weights = {"w_hh": lstm.weight_hh_l0}
    if proj_size:
        weights["w_hr"] = lstm.weight_hr_l0
    rows, values = spectra_records(0, "lstm", 0, "forward", "LSTM", weights)
    assert values == []  # every block on the fast route
    blocks = dict(spectra.recurrent_blocks("LSTM", weights, dtype=torch.float64))
    for row in rows:
        exact = block_spectrum(blocks[row["gate"]])
        for key in COLUMNS:
            if np.isnan(exact[key]):
                assert np.isnan(row[key]), (row["gate"], key)
            else:
                assert row[key] == pytest.approx(exact[key], rel=1e-6), (row["gate"], key)


def test_ill_conditioned_tall_block_falls_back_to_the_exact_gram():
    # condition number 300 and a crowded bottom: the float32 Gram cannot vouch for sigma_min, the
    # float64 one can (still the fast route, not LAPACK)
    g = torch.Generator().manual_seed(13)
    u = torch.linalg.qr(torch.randn(400, 100, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(100, 100, generator=g, dtype=torch.float64)).Q
    singular = torch.logspace(0, -math.log10(300), 100, dtype=torch.float64)
    assert assert_agrees(u @ torch.diag(singular) @ v.T, rel=1e-9) is None


# --- cases an adversarial review found (each once broke the fast route) -----------------------

def orthogonal(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q


def test_isolated_tiny_singular_value():
    # the inverse's top dwarfs the rest: the next Lanczos block is mostly rounding, which once
    # ended the run and accepted a 4-dimensional Ritz value as exact (sigma_min 6x too large)
    n = 300
    singular = torch.linspace(1, 0.1, n, dtype=torch.float64)
    singular[-1] = 1e-8
    w = orthogonal(n, 1) @ torch.diag(singular) @ orthogonal(n, 2).T
    assert assert_agrees(w) is None


@pytest.mark.parametrize("precision", ["highest", "medium"])
def test_identity_plus_rank_one(precision):
    # (W^T W)^{-1} - I has rank 2: most of the second Lanczos block is not new, two directions
    # are, and they must be kept
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(precision)
        g = torch.Generator().manual_seed(3)
        a, b = (torch.randn(300, 1, generator=g, dtype=torch.float64) / 300 ** 0.5
                for _ in range(2))
        assert_agrees(torch.eye(300, dtype=torch.float64) + 2 * a @ b.T)
        # one strong direction over noise 1e-6 below it
        u, v = torch.randn(300, 1, generator=g), torch.randn(1, 300, generator=g)
        noise = 1e-6 * torch.randn(300, 300, generator=g) / 300 ** 0.5
        assert_agrees((u @ v / 300 + noise).double())
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("scale", [1e-300, 1e-100, 1e-20, 1e20, 1e160])
def test_extreme_scales_give_scaled_answers(scale):
    # float32 Grams and float64 squares over- or underflow unless the block is rescaled first
    w = uniform(280, seed=14).double()
    exact = block_spectrum(w)
    for full in (False, True):
        summary, _ = block_summary(w * scale, full=full)
        for key in ("sigma_max", "sigma_min", "spectral_radius", "frobenius"):
            assert summary[key] == pytest.approx(exact[key] * scale, rel=1e-6), (full, key)
        assert summary["stable_rank"] == pytest.approx(exact["stable_rank"], rel=1e-6), full
    tall = uniform(100, seed=15, rows=400).double() * scale
    assert assert_agrees(tall) is None


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_radius_check_does_not_depend_on_the_scale(scale):
    # the two-sided bound once compared a squared quantity with a plain one: a scaled block fell
    # back to LAPACK (or was checked too leniently)
    w = uniform(300, seed=16).double()
    summary, spectrum = block_summary(w * scale, full=False)
    assert spectrum is None
    plain, _ = block_summary(w, full=False)
    assert summary["spectral_radius"] == pytest.approx(plain["spectral_radius"] * scale, rel=1e-7)


def test_top_eigenvalue_among_near_ties_of_outliers():
    # two outlying conjugate pairs whose moduli differ by 0.1 %, over a bulk of radius 0.4:
    # both must be vouched for and the larger one reported
    n = 300
    t = torch.zeros(n, n, dtype=torch.float64)
    for start, (radius, angle) in zip((0, 2), ((0.6195, 0.5), (0.62, 2.0))):
        c, s = math.cos(angle), math.sin(angle)
        t[start:start + 2, start:start + 2] = radius * torch.tensor([[c, -s], [s, c]])
    g = torch.Generator().manual_seed(17)
    t[4:, 4:] = torch.randn(n - 4, n - 4, generator=g, dtype=torch.float64) * 0.4 / n ** 0.5
    q = orthogonal(n, 18)
    summary, spectrum = block_summary(q @ t @ q.T, full=False)
    assert spectrum is None
    assert summary["spectral_radius"] == pytest.approx(0.62, rel=1e-7)


def test_numpy_views_with_negative_strides():
    a = np.random.default_rng(0).standard_normal((60, 60))
    for full in (False, True):
        summary, _ = block_summary(np.flip(a, axis=1), full=full)
        assert summary["sigma_max"] == pytest.approx(np.linalg.norm(a, 2), rel=1e-9)
