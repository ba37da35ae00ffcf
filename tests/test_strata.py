"""bsrdata.strata: per-stratum PSNR/SSIM/MAE against a direct numpy computation on hand-made pairs."""

import json
import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity
from sr_fakes import make_bench_dataset

from bsrdata import benchmark as bm
from bsrdata import strata as st
from bsrdata.errors import BsrError
from bsrdata.metrics import psnr_y, ssim, ssim_y


def _y(img):
    """Independent BT.601 luma (float64, not rounded)."""
    x = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def _sigma_map(h=36, w=44):
    s = np.full((h, w), 0.5)
    s[:, w // 2:] = 2.5      # a vertical σ step at x = w/2
    s[:8, :] = 1.5           # a top stripe: a horizontal step at y = 8
    s[20:24, 5:9] = 0.7      # a small, shallow bump (range 0.2: not a discontinuity)
    return s


def _band_brute(s, width, thr):
    """Band by definition: the σ range in the (2r+1)^2 window (clipped at the frame) exceeds thr."""
    r = width // 2
    h, w = s.shape
    out = np.zeros_like(s, bool)
    for i in range(h):
        for j in range(w):
            win = s[max(0, i - r): i + r + 1, max(0, j - r): j + r + 1]
            out[i, j] = win.max() - win.min() > thr
    return out


def _pair(seed, h=36, w=44):
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    noise = rng.integers(-30, 31, (h, w, 3))
    sr = np.clip(hr.astype(int) + noise, 0, 255).astype(np.uint8)
    return sr, hr


def test_edges_and_names():
    assert st.default_edges(5.0) == (0, 1, 2, 3, 4, 5)
    assert st.default_edges(4.2) == (0, 1, 2, 3, 4, 5)
    assert st.parse_edges("0.5", 2.0) == (0, 0.5, 1.0, 1.5, 2.0)
    assert st.parse_edges("0,1,3", 5.0) == (0, 1, 3)
    spec = st.StrataSpec((0, 1, 3))
    assert spec.bin_names() == ["sigma[0,1)", "sigma[1,3]"]
    for bad in ("1,0", "x", "0"):
        with pytest.raises(BsrError, match="--strata-bins"):
            st.parse_edges(bad, 5.0)
    with pytest.raises(BsrError, match="--band-width"):
        st.StrataSpec((0, 1), band_width=0)


def test_masks_match_definitions():
    s = _sigma_map()
    spec = st.StrataSpec((0, 1, 2, 3), band_width=6, band_threshold=0.5)
    m = st.masks(s, spec)
    assert np.array_equal(m["sigma[0,1)"], s < 1)
    assert np.array_equal(m["sigma[1,2)"], (s >= 1) & (s < 2))
    assert np.array_equal(m["sigma[2,3]"], s >= 2)
    band = _band_brute(s, 6, 0.5)
    assert np.array_equal(m["band"], band) and np.array_equal(m["flat"], ~band)
    # the band is 2r+... wide around the vertical step: columns w/2-3 .. w/2+2 on a row far from the stripe
    row = band[30]
    assert list(np.flatnonzero(row)) == list(range(44 // 2 - 3, 44 // 2 + 3))
    assert not band[20:24, 5:9].any()  # the shallow bump is flat


def test_ssim_map_mean_is_metrics_ssim_and_skimage_interior():
    sr, hr = _pair(1)
    a, b = _y(sr), _y(hr)
    smap = st.ssim_map(a, b, 255.0)
    assert smap.shape == (a.shape[0] - 10, a.shape[1] - 10)
    assert math.isclose(float(smap.mean()), ssim(a, b, 255.0), rel_tol=0, abs_tol=1e-12)
    _, full = structural_similarity(a, b, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    assert np.allclose(smap, full[5:-5, 5:-5], atol=1e-9)


@pytest.mark.parametrize("crop", [0, 3])
def test_unit_stats_direct(crop):
    sr, hr = _pair(2)
    s = _sigma_map()
    spec = st.StrataSpec((0, 1, 2, 3), band_width=6, band_threshold=0.5)
    got = st.sr_unit_stats(sr, hr, s, spec, crop)
    ys, yh = _y(sr), _y(hr)
    c = slice(crop, ys.shape[0] - crop), slice(crop, ys.shape[1] - crop)
    e = (ys - yh)[c]
    _, full = structural_similarity(ys[c], yh[c], data_range=255.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    inner = full[5:-5, 5:-5]
    band = _band_brute(s, 6, 0.5)[c]
    sc = s[c]
    want = {"all": np.ones_like(sc, bool), "sigma[0,1)": sc < 1, "sigma[1,2)": (sc >= 1) & (sc < 2),
            "sigma[2,3]": sc >= 2, "band": band, "flat": ~band}
    assert set(got) == set(want)
    for name, mk in want.items():
        n, sse, sae, ssum, sn = got[name]
        assert n == mk.sum() and sse == pytest.approx((e[mk] ** 2).sum(), rel=1e-12)
        assert sae == pytest.approx(np.abs(e[mk]).sum(), rel=1e-12)
        mi = mk[5:-5, 5:-5]
        assert sn == mi.sum() and ssum == pytest.approx(inner[mi].sum(), abs=1e-8)
    # the whole-image stratum of one image is the harness's PSNR / SSIM
    n, sse, _, ssum, sn = got["all"]
    assert 10 * math.log10(255.0 ** 2 / (sse / n)) == pytest.approx(psnr_y(sr, hr, crop), abs=1e-9)
    assert ssum / sn == pytest.approx(ssim_y(sr, hr, crop), abs=1e-10)


def test_aggregate_pools_pixels_per_group():
    spec = st.StrataSpec((0, 1, 2, 3), band_width=6, band_threshold=0.5)
    s_va = _sigma_map()
    s_iva = np.full_like(s_va, 1.5)
    pairs = {"a_va": (_pair(3), s_va), "b_va": (_pair(4), s_va), "a_iva": (_pair(5), s_iva)}
    stats = {u: st.sr_unit_stats(p[0], p[1], s, spec) for u, (p, s) in pairs.items()}
    inv = {"a_va": False, "b_va": False, "a_iva": True}
    groups = {1: ["a_iva", "b_va"], 2: ["a_va", "b_va"]}
    agg = st.aggregate(groups, stats, inv, spec, 255.0)

    def direct(uids, name):
        errs = []
        for u in uids:
            (sr, hr), s = pairs[u]
            m = st.masks(s, spec)["all" if name in ("iva", "va") else name]
            errs.append((_y(sr) - _y(hr))[m])
        e = np.concatenate(errs)
        return 10 * math.log10(255.0 ** 2 / np.mean(e ** 2)) if e.size else None

    for name in st.strata_names(spec):
        for g, uids in groups.items():
            sel = [u for u in uids if (name not in ("iva", "va")) or inv[u] == (name == "iva")]
            want = direct(sel, name) if sel else None
            if want is None:
                assert str(g) not in agg[name]
            else:
                assert agg[name][str(g)]["psnr"] == pytest.approx(want, abs=1e-9), (name, g)
        present = [agg[name][str(g)]["psnr"] for g in groups if str(g) in agg[name]]
        if present:
            assert agg[name]["avg"]["psnr"] == pytest.approx(np.mean(present))
    # the invariant rendering (σ = 1.5 everywhere) only fills the [1,2) bin of group 1, and no band
    assert agg["iva"]["1"]["images"] == 1 and "2" not in agg["iva"]
    assert agg["band"]["1"]["images"] == 1


def test_blur_unit_stats_units():
    s = _sigma_map()
    pred = s + 0.25
    spec = st.StrataSpec((0, 1, 2, 3))
    got = st.blur_unit_stats(pred, s, spec, sigma_max=5.0)
    n, sse, sae, _, _ = got["all"]
    assert sae / n == pytest.approx(0.25)               # MAE in σ px
    assert sse / n == pytest.approx((0.25 / 5.0) ** 2)  # MSE of σ/σ_max


def test_bench_with_strata_records_and_reuses(tmp_path):
    root = tmp_path / "ds"
    make_bench_dataset(root, n_test=5, h=32, w=40)
    data = bm.BenchData(root, "1-5")
    out = tmp_path / "bench"
    bm.run_bench(data, [bm.get_method("bicubic")], out)  # first without strata
    spec = st.StrataSpec.make(data.sigma_max, None, 8, 0.5)
    res = bm.run_bench(data, [bm.get_method("bicubic")], out, strata=spec)  # rescored with strata
    md, aggs = st.write_bench_strata(data, out, res.rows, spec)
    doc = json.loads((out / "strata.json").read_text())
    assert doc["spec"]["edges"] == [0, 1, 2, 3, 4, 5] and "bicubic" in doc["methods"]
    assert "sigma[0,1)" in md and "band" in md
    agg = aggs["bicubic"]
    # group 1 holds one invariant image (σ 1.5 everywhere): its iva stratum is that image's PSNR
    uid = next(u for u in data.groups[1] if data.units[u].invariant)
    s = data.load(uid)
    sr = bm.BicubicMethod().run([(uid, s)], None)[0]
    assert agg["iva"]["1"]["psnr"] == pytest.approx(psnr_y(sr, s["hr"]), abs=1e-9)
    # the fake VA maps are 0.3 | 0.8 halves: no pixel reaches σ >= 1 outside the invariant renderings
    assert agg["sigma[0,1)"]["1"]["images"] == 4 and agg["sigma[1,2)"]["1"]["images"] == 1
    # their σ step is 0.5 px, not above the 0.5 px threshold: no band, flat is every pixel
    assert agg["band"] == {} and agg["flat"]["1"]["psnr"] == pytest.approx(agg["all"]["1"]["psnr"])
