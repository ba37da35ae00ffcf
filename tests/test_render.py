"""bsrdata.render: numba operators against the numpy float64 twins and analytic cases."""

import cv2
import numpy as np
import pytest

from bsrdata import optics
from bsrdata.errors import BsrError
from bsrdata.render import (
    count_layers,
    gaussian_kernel_1d,
    render_gather,
    render_gather_points,
    render_layered,
)
from bsrdata.render.reference import (
    gather_points_reference,
    gather_reference,
    layered_opencv,
    layered_reference,
)


def planes_scene(seed, h=40, w=56, max_coc=15, focus_rank=None):
    """Random image; depth = a few planes with noise and occlusions; CoC quantised; near mask."""
    rng = np.random.default_rng(seed)
    img = rng.random((h, w, 3)).astype(np.float32)
    depth = np.full((h, w), 3.0)
    depth[h // 4: 3 * h // 4, w // 5: w // 2] = 1.0
    depth[:, 3 * w // 4:] = 6.0
    depth[2 * h // 3:, : w // 3] = 0.5
    depth[h // 8: h // 3, 4 * w // 5: 9 * w // 10] = 0.7
    depth += rng.random((h, w)) * 0.3
    if focus_rank is None:
        focus = optics.sample_focus(depth, rng)
    else:
        u = np.unique(depth)
        focus = float(u[int(focus_rank * (u.size - 1))])
    coc = optics.quantise_coc(optics.coc_normalised(depth, focus, max_coc), 0.1)
    return img, coc, depth < focus


CASES = [(0, 9, 0.6), (1, 13, 0.5), (2, 15, None), (3, 21, 0.7), (4, 17, 0.45), (5, 21, None)]


@pytest.mark.parametrize("seed,max_coc,rank", CASES)
@pytest.mark.parametrize("floor_colour", [False, True])
def test_layered_matches_twin(seed, max_coc, rank, floor_colour):
    img, coc, near = planes_scene(seed, max_coc=max_coc, focus_rank=rank)
    ref = layered_reference(img, coc, max_coc, near=near, floor_colour=floor_colour)
    out, stats = render_layered(img, coc, max_coc, near=near, floor_colour=floor_colour, return_stats=True)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert stats["n_layers"] == count_layers(coc, near)
    if rank is not None:
        assert stats["band_pixels"] > 0  # the partial-occlusion fill ran
    assert np.abs(out - ref).max() <= 1e-4
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_twin_differs_when_order_or_floor_changes():
    # guards against a comparison that cannot fail: the options the test above checks do change the result
    img, coc, near = planes_scene(1, max_coc=13, focus_rank=0.5)
    ref = layered_reference(img, coc, 13, near=near)
    assert np.abs(ref - layered_reference(img, coc, 13)).max() > 1e-2
    assert np.abs(ref - layered_reference(img, coc, 13, near=near, floor_colour=True)).max() > 1e-6


def test_opencv_straightforward_matches_twin():
    img, coc, near = planes_scene(4, max_coc=17, focus_rank=0.45)
    a = layered_reference(img, coc, 17, near=near)
    b = layered_opencv(img, coc, 17, near=near)
    assert np.abs(a - b).max() <= 1e-4


@pytest.mark.parametrize("c,max_coc", [(9.0, 21), (21.0, 21), (5.3, 11), (1.0, 9)])
def test_one_layer_is_plain_gaussian_blur(c, max_coc):
    rng = np.random.default_rng(7)
    img = rng.random((37, 45, 3)).astype(np.float32)
    coc = np.full((37, 45), c)
    k = gaussian_kernel_1d(max(0.0, (c - 1) / 4), max_coc)
    expected = cv2.sepFilter2D(img.astype(np.float64), cv2.CV_64F, k, k, borderType=cv2.BORDER_REFLECT)
    for fn in (render_layered, layered_reference):
        out = fn(img, coc, max_coc)
        assert np.abs(out - expected).max() <= 1e-5


def test_in_focus_region_untouched_away_from_depth_edges():
    rng = np.random.default_rng(11)
    h, w, max_coc = 40, 60, 21
    img = rng.random((h, w, 3)).astype(np.float32)
    depth = np.full((h, w), 4.0)
    depth[:, 30:] = 1.0  # near plane, in front of the focus at 4 m
    coc = optics.quantise_coc(optics.coc_normalised(depth, 4.0, max_coc))
    near = depth < 4.0
    r = max_coc // 2
    for fn in (render_layered, layered_reference):
        out = fn(img, coc, max_coc, near=near)
        np.testing.assert_allclose(out[:, : 30 - r], img[:, : 30 - r], atol=1e-6)
        assert np.abs(out[:, 30 - r: 30] - img[:, 30 - r: 30]).max() > 1e-3  # the near blur spills over


def test_floor_colour_keeps_a_constant_image_constant():
    img, coc, near = planes_scene(3, max_coc=21, focus_rank=0.7)
    flat = np.full_like(img, 0.8)
    out = render_layered(flat, coc, 21, near=near, floor_colour=True)
    np.testing.assert_allclose(out, 0.8, atol=1e-5)


def test_gaussian_kernel_1d():
    g = gaussian_kernel_1d(2.0, 9)
    x = np.arange(-4, 5)
    e = np.exp(-x**2 / 8.0)
    np.testing.assert_allclose(g, e / e.sum(), rtol=1e-12)
    assert g.dtype == np.float64 and g.sum() == pytest.approx(1.0)
    d = gaussian_kernel_1d(0.0, 21)
    assert d[10] == 1.0 and d.sum() == 1.0
    with pytest.raises(BsrError, match="max_coc"):
        gaussian_kernel_1d(1.0, 8)


@pytest.mark.parametrize("seed,max_coc", [(0, 9), (1, 15), (2, 21)])
def test_gather_matches_twin(seed, max_coc):
    img, coc, _ = planes_scene(seed, max_coc=max_coc)
    sigma = optics.sigma_from_coc(coc)
    ref = gather_reference(img, sigma, max_coc)
    out = render_gather(img, sigma, max_coc)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert np.abs(out - ref).max() <= 1e-4
    for step in (1, 3, 4):
        pts = render_gather_points(img, sigma, max_coc, step)
        assert pts.shape == (-(-img.shape[0] // step), -(-img.shape[1] // step), 3)
        assert np.abs(pts - ref[::step, ::step]).max() <= 1e-4
        assert np.abs(pts - gather_points_reference(img, sigma, max_coc, step)).max() <= 1e-4


def test_gather_per_pixel_sigma_is_used():
    rng = np.random.default_rng(5)
    img = rng.random((30, 30, 3)).astype(np.float32)
    sigma = np.zeros((30, 30))
    sigma[:, 15:] = 3.0
    out = render_gather(img, sigma, 15)
    np.testing.assert_array_equal(out[:, :15], img[:, :15])
    k = gaussian_kernel_1d(3.0, 15)
    full = cv2.sepFilter2D(img.astype(np.float64), cv2.CV_64F, k, k, borderType=cv2.BORDER_REFLECT)
    assert np.abs(out[:, 15:] - full[:, 15:]).max() <= 1e-5


@pytest.mark.parametrize("fn", ["layered", "gather", "points"])
def test_bad_inputs(fn):
    img = np.zeros((20, 30, 3), np.float32)
    m = np.zeros((20, 30))

    def call(i, mp, mc):
        if fn == "layered":
            return render_layered(i, mp, mc)
        if fn == "gather":
            return render_gather(i, mp, mc)
        return render_gather_points(i, mp, mc, 4)

    with pytest.raises(BsrError, match="does not match the image"):
        call(img, np.zeros((20, 31)), 9)
    with pytest.raises(BsrError, match=r"RGB image"):
        call(np.zeros((20, 30), np.float32), m, 9)
    with pytest.raises(BsrError, match=r"RGB image"):
        call(np.zeros((20, 30, 4), np.float32), m, 9)
    with pytest.raises(BsrError, match="even"):
        call(img, m, 10)
    with pytest.raises(BsrError, match="too small"):
        call(img, m, 1)
    with pytest.raises(BsrError, match="finite"):
        call(img, np.full((20, 30), np.nan), 9)
    for e in (BsrError,):
        try:
            call(img, np.zeros((20, 31)), 9)
        except e as err:
            assert "\n" not in str(err)


@pytest.mark.parametrize("h,w", [(6, 7), (1, 9), (12, 3)])
def test_images_smaller_than_the_window(h, w):
    # mirrored borders repeat (period 2n) when the window is wider than the image
    rng = np.random.default_rng(h * w)
    img = rng.random((h, w, 3)).astype(np.float32)
    depth = rng.choice([0.8, 1.5, 4.0], size=(h, w))
    coc = optics.quantise_coc(optics.coc_normalised(depth, 1.5, 21))
    near = depth < 1.5
    ref = layered_reference(img, coc, 21, near=near)
    assert np.abs(render_layered(img, coc, 21, near=near) - ref).max() <= 1e-4
    sigma = optics.sigma_from_coc(coc)
    assert np.abs(render_gather(img, sigma, 21) - gather_reference(img, sigma, 21)).max() <= 1e-4


def test_all_in_focus_returns_the_image_and_is_deterministic():
    img, coc, near = planes_scene(2, max_coc=15, focus_rank=0.5)
    np.testing.assert_array_equal(render_layered(img, np.zeros_like(coc), 15), img)
    a = render_layered(img, coc, 15, near=near)
    b = render_layered(img, coc, 15, near=near)
    np.testing.assert_array_equal(a, b)


def test_count_layers_counts_both_sides_of_focus():
    coc = np.array([[0.0, 2.0, 2.0, 5.0], [2.0, 0.04, 7.0, 7.0]])
    near = np.array([[False, False, True, False], [True, True, True, False]])
    # far side: {0, 20, 50, 70} (rint(c / 0.1)); near side: {20, 0, 70}
    assert count_layers(coc, near) == 7
    assert count_layers(coc) == 4


@pytest.mark.parametrize("seed,rank", [(6, 0.3), (7, 0.45)])
def test_fill_solvers_meet_the_bound_on_fill_heavy_frames(seed, rank):
    # most of the frame in front of the focus: the partial-occlusion fill runs on large bands for many
    # layers, and every solver at its default tolerance (adaptive SOR, the default; SOR over the whole
    # band; multigrid CG) stays within 1e-4 of the twin's exact sparse solve
    from bsrdata.render.fill_compare import render_layered_compare

    img, coc, near = planes_scene(seed, h=72, w=96, max_coc=21, focus_rank=rank)
    ref = layered_reference(img, coc, 21, near=near)
    for solver, omega in (("sor", None), ("sor", 1.75), ("sor-full", None), ("mg", None)):
        out, stats = render_layered_compare(img, coc, 21, near=near, fill_solver=solver, fill_omega=omega,
                                            return_stats=True)
        assert stats["band_pixels"] > 5 * img.shape[0] * img.shape[1] // 10
        assert np.abs(out - ref).max() <= 1e-4, solver
    # the check can fail: a fill stopped far too early is visibly off
    bad = render_layered(img, coc, 21, near=near, fill_tol=0.3)
    assert np.abs(bad - ref).max() > 1e-4


def test_fill_compare_sor_is_the_product_path_and_jacobi_runs():
    from bsrdata.render.fill_compare import render_layered_compare

    img, coc, near = planes_scene(4, max_coc=17, focus_rank=0.45)
    np.testing.assert_array_equal(render_layered_compare(img, coc, 17, near=near, fill_solver="sor"),
                                  render_layered(img, coc, 17, near=near))
    ref = layered_reference(img, coc, 17, near=near)
    out, stats = render_layered_compare(img, coc, 17, near=near, fill_solver="jacobi", return_stats=True)
    assert stats["band_pixels"] > 0 and stats["cg_iterations"] > 0
    assert np.abs(out - ref).max() <= 1e-4
    # "none" (profiling: band search without a fill) runs and is visibly not the layered result
    out, stats = render_layered_compare(img, coc, 17, near=near, fill_solver="none", return_stats=True)
    assert stats["cg_iterations"] == 0
    assert np.abs(out - ref).max() > 1e-3


def test_bad_fill_solver():
    from bsrdata.render.fill_compare import render_layered_compare

    img, coc, near = planes_scene(0, max_coc=9, focus_rank=0.6)
    with pytest.raises(BsrError, match="fill_solver"):
        render_layered_compare(img, coc, 9, near=near, fill_solver="lu")
    with pytest.raises(TypeError):  # the comparison solvers are not on the product path
        render_layered(img, coc, 9, near=near, fill_solver="mg")


def test_plan_layers_matches_the_plain_layer_labels_and_kernels():
    # the counting-sort plan against common.layer_labels (np.unique + stable argsort) and the per-σ kernel
    from bsrdata.render.common import layer_labels, trimmed_radius
    from bsrdata.render.layered import plan_layers

    for seed, max_coc, rank in CASES:
        img, coc, near = planes_scene(seed, max_coc=max_coc, focus_rank=rank)
        order, starts, sigmas, gtab, rts, rbs = plan_layers(coc, near, max_coc, 0.1)
        labels, cidx, _ = layer_labels(coc, near, 0.1)
        flat = labels.ravel()
        np.testing.assert_array_equal(order, np.argsort(flat, kind="stable"))
        np.testing.assert_array_equal(np.diff(starts), np.bincount(flat))
        np.testing.assert_array_equal(sigmas, np.maximum(0.0, (cidx * 0.1 - 1.0) / 4.0))
        for i, sg in enumerate(sigmas):
            g = gaussian_kernel_1d(sg, max_coc)
            np.testing.assert_allclose(gtab[i], g, rtol=0, atol=1e-15)
            assert rts[i] == trimmed_radius(g)
            # rb: beyond it the 2-D tail mass is below floor/2 (a safe radius for the band search)
            r = max_coc // 2
            tail = g[:r - rbs[i]].sum() + g[r + rbs[i] + 1:].sum()
            assert 2.0 * tail < 0.5e-3 or rbs[i] == r


_THREADS_SCRIPT = """
import numpy as np, numba
from bsrdata import optics
from bsrdata.render import render_layered
rng = np.random.default_rng(3)
h, w, m = 96, 128, 21
img = rng.random((h, w, 3)).astype(np.float32)
yy, xx = np.mgrid[0:h, 0:w]
depth = 0.5 + 4.0 * yy / h + 0.3 * (xx > w // 2) + 0.05 * rng.random((h, w))
focus = float(np.quantile(depth, 0.7))
coc = optics.quantise_coc(optics.coc_normalised(depth, focus, m), 0.1)
near = depth < focus
a = render_layered(img, coc, m, near=near, threads=1)
b = render_layered(img, coc, m, near=near, threads=2)
print(numba.config.NUMBA_NUM_THREADS, int(np.array_equal(a, b)), int(near.mean() > 0.5))
"""


def test_threads_give_bit_identical_output(tmp_path):
    # in a fresh process, so that this test session never starts numba's OpenMP pool (a process that has
    # started it cannot fork build workers safely)
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    n, same, fill_heavy = out.stdout.split()
    assert n == "2" and fill_heavy == "1"
    assert same == "1"


def test_render_threads_default(monkeypatch):
    from bsrdata.render import layered, set_render_threads
    from bsrdata.render.layered import _resolve_threads

    prev = set_render_threads(1)
    try:
        assert _resolve_threads(None) == 1
        assert _resolve_threads(3) == min(3, __import__("numba").config.NUMBA_NUM_THREADS)
        set_render_threads(None)  # automatic: numba's count on an idle machine, one thread on a busy one
        monkeypatch.setattr(layered, "_running_total", lambda: 1)
        assert _resolve_threads(None) == __import__("numba").get_num_threads()
        monkeypatch.setattr(layered, "_running_total", lambda: 64)
        monkeypatch.setattr(layered, "_running_here", lambda: 1)
        assert _resolve_threads(None) == 1
        assert _resolve_threads(2) == min(2, __import__("numba").config.NUMBA_NUM_THREADS)  # explicit: kept
    finally:
        set_render_threads(prev)


@pytest.mark.parametrize("cpus, total, here, n_max, want", [
    (2, 1, 1, 2, 2),      # idle: only this reader runs
    (2, 2, 1, 2, 1),      # one other process runs: one core left
    (2, 3, 3, 2, 2),      # the runnable threads are this process's own (numba workers still spinning)
    (2, 6, 1, 2, 1),      # load ~5 on 2 cores
    (16, 5, 1, 16, 12),   # 4 foreign threads on 16 cores: 12 left
    (16, 40, 2, 8, 1),
    (16, 1, 1, 8, 8),
])
def test_auto_threads_follow_the_load(monkeypatch, cpus, total, here, n_max, want):
    import os

    from bsrdata.render import layered

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(layered, "_running_total", lambda: total)
    monkeypatch.setattr(layered, "_running_here", lambda: here)
    assert layered.auto_threads(n_max) == want


def test_auto_threads_reads_proc(monkeypatch):
    import os

    from bsrdata.render import layered

    if os.path.exists("/proc/loadavg"):
        assert layered._running_total() >= 1 and layered._running_here() >= 1
    assert 1 <= layered.auto_threads(4) <= 4
    monkeypatch.setattr(layered, "_running_total", lambda: None)  # no /proc: the 1-minute load average
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 7.0, 7.0))
    assert layered.auto_threads(4) == 1


_CACHE_SCRIPT = """
import json, os, sys
import numba
prev = numba.config.CACHE_DIR
import numpy as np
import bsrdata
from bsrdata.render import kernel_cache, layered, render_gather
out = None
if len(sys.argv) > 1:
    rng = np.random.default_rng(0)
    out = render_gather(rng.random((6, 7, 3)).astype(np.float32), np.full((6, 7), 1.5), 9).tolist()
print(json.dumps({"pkg": bsrdata.__file__, "hash": kernel_cache.SOURCES_HASH, "dir": kernel_cache.CACHE_DIR,
                  "kernel_dir": layered._render._cache._cache_path, "config_kept": numba.config.CACHE_DIR == prev,
                  "out": out}))
"""


def _render_sources_hash(render_dir):
    # written out here independently of kernel_cache.sources_hash
    import glob
    import hashlib
    import os

    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(render_dir, "*.py"))):
        data = open(path, "rb").read()
        h.update(os.path.basename(path).encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def test_kernel_cache_folder_is_keyed_on_the_render_sources(tmp_path):
    # numba's cache checks only the timestamp of the file defining a kernel; the render kernels inline
    # helpers from other files (gather uses blur._refl), so the cache folder is named by a hash of all the
    # render sources: an edit to any of them compiles afresh instead of loading a stale kernel
    import json
    import os
    import shutil
    import subprocess
    import sys

    import bsrdata

    pkg = tmp_path / "pkg"
    shutil.copytree(os.path.dirname(bsrdata.__file__), pkg / "bsrdata",
                    ignore=shutil.ignore_patterns("__pycache__"))
    render_dir = pkg / "bsrdata" / "render"
    base = tmp_path / "cache"

    def run(*args, cache=True):
        env = dict(os.environ, PYTHONPATH=str(pkg), NUMBA_NUM_THREADS="1")
        env.pop("NUMBA_CACHE_DIR", None)
        if cache:
            env["NUMBA_CACHE_DIR"] = str(base)
        res = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, *args], capture_output=True, text=True,
                             env=env, timeout=600, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        d = json.loads(res.stdout.strip().splitlines()[-1])
        assert d["pkg"].startswith(str(pkg))
        assert d["config_kept"]  # other numba code in the process keeps the user's setting
        return d

    h0 = _render_sources_hash(render_dir)
    a = run("render")
    assert a["hash"] == h0 and a["dir"] == os.path.join(str(base), "render-" + h0)
    assert a["kernel_dir"].startswith(a["dir"] + os.sep)
    assert a["out"] == run("render")["out"]  # loaded from the cache: same values
    # unset NUMBA_CACHE_DIR: the package's own __pycache__, still keyed on the hash
    assert run(cache=False)["dir"] == os.path.join(str(render_dir), "__pycache__", "numba-" + h0)

    # change only blur.py's mirror helper (clamp instead of mirror): gather.py, whose kernel inlines it, is
    # untouched, so numba's own check would load the stale gather kernel; the new folder recompiles it
    src = (render_dir / "blur.py").read_text()
    assert src.count("        i = p - 1 - i\n") == 1
    (render_dir / "blur.py").write_text(src.replace("        i = p - 1 - i\n", "        i = n - 1\n"))
    h1 = _render_sources_hash(render_dir)
    b = run("render")
    assert h1 != h0 and b["hash"] == h1 and b["dir"] == os.path.join(str(base), "render-" + h1)
    assert b["out"] != a["out"]
