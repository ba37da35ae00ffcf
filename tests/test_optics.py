"""bsrdata.optics: thin-lens formulas against hand-computed values, sampling statistics, depth cleaning."""

import numpy as np
import pytest

from bsrdata import optics
from bsrdata.errors import BsrError


def test_coc_physical_hand_value():
    # f = 50 mm, N = 2, focus 2 m, object 4 m, 640 px over a 36 mm sensor
    c = optics.coc_physical(np.array([[4.0]]), 2.0, 50.0, 2.0, 640)
    expected = 50.0**2 * (4000.0 - 2000.0) / (2.0 * 4000.0 * (2000.0 - 50.0)) * 640.0 / 36.0
    assert c[0, 0] == pytest.approx(expected, rel=1e-12)
    assert c[0, 0] == pytest.approx(5.698005698, rel=1e-8)
    # in focus -> 0; symmetric form |z - zf|
    assert optics.coc_physical(np.array([2.0]), 2.0, 50.0, 2.0, 640)[0] == 0.0


def test_coc_normalised_equals_physical_with_solved_n():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.8, 9.0, size=(30, 40))
    focus = float(depth[3, 7])
    for f_mm in optics.FOCAL_LENGTHS_MM:
        n = optics.solve_f_number(depth, focus, f_mm, 21, 40)
        phys = optics.coc_physical(depth, focus, f_mm, n, 40)
        norm = optics.coc_normalised(depth, focus, 21)
        np.testing.assert_allclose(norm, phys, rtol=1e-10, atol=1e-10)
    assert norm.max() == pytest.approx(21.0, abs=1e-12)
    assert norm[3, 7] == 0.0


def test_coc_normalised_formula_and_scale_free():
    depth = np.array([[1.0, 2.0, 4.0, 8.0]])
    c = optics.coc_normalised(depth, 2.0, 21)
    # |1/z - 1/2| = 0.5, 0, 0.25, 0.375; max over z_min, z_max = 0.5
    np.testing.assert_allclose(c, [[21.0, 0.0, 10.5, 15.75]], rtol=1e-12)
    np.testing.assert_allclose(optics.coc_normalised(depth * 1000.0, 2000.0, 21), c, rtol=1e-12)


def test_two_plane_sigma_map_is_exactly_zero_or_sigma_max():
    depth = np.full((20, 30), 5.0)
    depth[:, 12:] = 1.5
    for max_coc in (21, 61):
        coc = optics.quantise_coc(optics.coc_normalised(depth, 1.5, max_coc), 0.1)
        sig = optics.sigma_from_coc(coc)
        assert set(np.unique(sig).tolist()) == {0.0, (max_coc - 1) / 4.0}


def test_quantise_sigma_coc():
    np.testing.assert_allclose(optics.quantise_coc([0.04, 0.06, 2.349, 20.96]), [0.0, 0.1, 2.3, 21.0])
    np.testing.assert_allclose(optics.quantise_coc([1.26], 0.5), [1.5])
    np.testing.assert_allclose(optics.sigma_from_coc([0.0, 1.0, 1.4, 21.0, 61.0]), [0, 0, 0.1, 5.0, 15.0])
    np.testing.assert_allclose(optics.coc_from_sigma([0.0, 5.0, 15.0]), [1.0, 21.0, 61.0])
    with pytest.raises(BsrError, match="coc_step"):
        optics.quantise_coc([1.0], 0.0)


def test_focus_sampling_favours_near_ranks():
    rng = np.random.default_rng(0)
    depth = np.linspace(1.0, 10.0, 1000).reshape(20, 50)  # 1000 unique depths, rank == index
    ranks = np.array([np.searchsorted(np.unique(depth), optics.sample_focus(depth, rng)) for _ in range(4000)])
    near20 = np.mean(ranks < 200)
    far40 = np.mean(ranks >= 600)
    assert 0.52 < near20 < 0.66, near20
    assert 0.005 < far40 < 0.035, far40
    assert np.all(np.isin(ranks, np.arange(1000)))


def test_focal_length_weights():
    rng = np.random.default_rng(3)
    f = np.array([optics.sample_focal_length(rng) for _ in range(9000)])
    assert set(np.unique(f).tolist()) <= {50.0, 70.0, 85.0}
    assert np.mean(f == 50.0) == pytest.approx(1 / 9, abs=0.015)
    assert np.mean(f == 70.0) == pytest.approx(4 / 9, abs=0.02)
    assert np.mean(f == 85.0) == pytest.approx(4 / 9, abs=0.02)


def test_clean_depth_nearest_valid_rule():
    d = np.array([[1.0, 0.0, 3.0, np.nan],
                  [1.0, -2.0, 3.0, np.inf],
                  [1.0, 1.0, 3.0, 3.0]], dtype=np.float32)
    out, valid = optics.clean_depth(d)
    assert out.dtype == np.float64 and np.all(np.isfinite(out)) and np.all(out > 0)
    assert valid.tolist() == [[True, False, True, False], [True, False, True, False], [True] * 4]
    assert out[0, 3] == 3.0 and out[1, 3] == 3.0
    assert out[1, 1] in (1.0, 3.0)  # nearest valid pixels at distance 1: (2,1)=1, (1,0)=1, (1,2)=3
    assert out[0, 1] in (1.0, 3.0)
    np.testing.assert_array_equal(out[valid], d[valid])


def test_clean_depth_errors():
    with pytest.raises(BsrError, match="no valid pixel"):
        optics.clean_depth(np.full((4, 4), np.nan))
    with pytest.raises(BsrError, match="no valid pixel"):
        optics.clean_depth(np.zeros((4, 4)))
    with pytest.raises(BsrError, match="depth"):
        optics.clean_depth(np.ones((4, 4, 1)))


def test_coc_rejects_invalid_depth():
    with pytest.raises(BsrError, match="depth_m"):
        optics.coc_normalised(np.array([[1.0, np.nan]]), 1.0, 21)
    with pytest.raises(BsrError, match="depth_m"):
        optics.coc_normalised(np.array([[1.0, 0.0]]), 1.0, 21)


@pytest.mark.parametrize("bad", [20, 1, 2, 0, -3, 21.5, "x", None])
def test_max_coc_validation(bad):
    with pytest.raises(BsrError, match="max_coc"):
        optics.check_max_coc(bad)


def test_max_coc_ok():
    assert optics.check_max_coc(21) == 21 and optics.check_max_coc(3.0) == 3
