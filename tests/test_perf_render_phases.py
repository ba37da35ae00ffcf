"""perf/render_phases.py's copy of the renderer's layer loop stays equal to ``render_layered`` (bit-identical
image, the same fill statistics) on a small frame whose focus leaves layers in front of it (so the fill runs)."""

import importlib.util
import os

import numpy as np
import pytest

from bsrdata.render import render_layered


def _load():
    path = os.path.join(os.path.dirname(__file__), "..", "perf", "render_phases.py")
    spec = importlib.util.spec_from_file_location("perf_render_phases", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _scene(seed=0, h=40, w=56):
    rng = np.random.default_rng(seed)
    img = rng.random((h, w, 3)).astype(np.float32)
    coc = np.zeros((h, w))
    coc[:, : w // 3] = 7.3  # far, behind focus
    coc[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 0.0  # in focus
    coc[h // 3: h // 2 + 6, w // 2:] = 5.1  # in front of focus: needs the fill
    coc[2:9, 3:20] = 3.2
    near = np.zeros((h, w), dtype=bool)
    near[h // 3: h // 2 + 6, w // 2:] = True
    near[2:9, 3:20] = True
    return img, coc, near


@pytest.mark.parametrize("threads", [1, 2])
def test_phase_loop_matches_render_layered(threads):
    mod = _load()
    img, coc, near = _scene()
    ref, ref_stats = render_layered(img, coc, 11, near=near, threads=threads, return_stats=True)
    out, sec, stats = mod.render_phases(img, coc, near, 11, threads=threads)
    assert ref_stats["band_pixels"] > 0  # the fill ran, so its phase is compared too
    np.testing.assert_array_equal(out, ref)
    assert stats["band_pixels"] == ref_stats["band_pixels"]
    assert stats["cg_iterations"] == ref_stats["cg_iterations"]
    assert set(sec) == set(mod.PHASES) and all(v >= 0.0 for v in sec.values())


def test_state_fields_name_every_entry():
    from bsrdata.render import layered

    img, coc, near = _scene()
    order, starts, sigmas, gtab, rts, rbs = layered.plan_layers(coc, near, 11, 0.1)
    st = layered._render_state(img, sigmas, gtab, rts)
    assert len(layered.STATE_FIELDS) == len(st) == len(set(layered.STATE_FIELDS))
    f = dict(zip(layered.STATE_FIELDS, st))
    assert f["merged"].shape == img.shape and f["acc"].shape == img.shape[:2] and f["has_fill"] is True

