"""Embedded sources: synthetic scenes, the Middlebury pair, the get_source registry."""

import subprocess
import sys

import numpy as np
import pytest

from bsrdata.errors import BsrError
from bsrdata.sources import get_source
from bsrdata.sources.base import CombinedSource
from bsrdata.sources.middlebury import KEY, MiddleburySource, disparity_to_depth_m
from bsrdata.sources.synthetic import SyntheticSource, demo_source


@pytest.fixture(scope="module")
def syn():
    return SyntheticSource(n_train=3, n_test=2, size=(60, 80), seed=4)


def test_synthetic_records(syn):
    sp = syn.splits()
    assert sp == {"train": ["synth-train-0000", "synth-train-0001", "synth-train-0002"],
                  "test": ["synth-test-0000", "synth-test-0001"]}
    for k in sp["train"] + sp["test"]:
        r = syn.load(k)
        assert r.key == k
        assert r.rgb.shape == (60, 80, 3) and r.rgb.dtype == np.uint8
        assert r.depth.shape == (60, 80) and r.depth.dtype == np.float32
        assert np.all(np.isfinite(r.depth)) and 0.3 < r.depth.min() and r.depth.max() < 15
        assert r.seg.dtype == np.uint8 and r.seg.max() < 8
        assert r.rgb.std() > 10  # textured, not flat


def test_synthetic_deterministic_per_key(syn):
    other = SyntheticSource(n_train=3, n_test=2, size=(60, 80), seed=4)
    a, b = syn.load("synth-train-0001"), other.load("synth-train-0001")
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth) and np.array_equal(a.seg, b.seg)
    c = syn.load("synth-train-0002")
    assert not np.array_equal(a.depth, c.depth)
    d = SyntheticSource(n_train=3, n_test=2, size=(60, 80), seed=5).load("synth-train-0001")
    assert not np.array_equal(a.depth, d.depth)


def test_depth_edges_are_label_edges():
    """Large depth jumps between neighbours (occlusion boundaries) almost always separate different labels,
    and the scenes do have occluding objects (classes 4..7) in front of the room."""
    src = SyntheticSource(n_train=6, n_test=0, size=(96, 128), seed=1)
    jumps = agree = 0
    objects = 0
    for k in src.splits()["train"]:
        r = src.load(k)
        z, s = r.depth.astype(float), r.seg
        for dz, ds in ((np.abs(np.diff(z, axis=0)) / z[1:], s[1:] != s[:-1]),
                       (np.abs(np.diff(z, axis=1)) / z[:, 1:], s[:, 1:] != s[:, :-1])):
            big = dz > 0.15
            jumps += big.sum()
            agree += (big & ds).sum()
        objects += np.isin(s, [4, 5, 6, 7]).mean() > 0.02
    assert jumps > 50
    assert agree / jumps > 0.85
    assert objects >= 4


def test_synthetic_bad_options():
    with pytest.raises(BsrError):
        SyntheticSource(size=(4, 4))
    with pytest.raises(BsrError):
        SyntheticSource(n_train=-1)
    with pytest.raises(BsrError, match="unknown key"):
        SyntheticSource(n_train=1).load("synth-train-0005")


def test_middlebury_depth_formula():
    d = np.array([[np.inf, np.nan, 0.0, 50.0, -40.0]], np.float32)
    z = disparity_to_depth_m(d)
    assert z[0, 0] == 0 and z[0, 1] == 0 and z[0, 4] == 0  # unknown / behind the camera -> invalid
    assert z[0, 2] == pytest.approx(994.978 * 193.001 / 31.086 / 1000, rel=1e-6)
    assert z[0, 3] == pytest.approx(994.978 * 193.001 / 81.086 / 1000, rel=1e-6)


def test_middlebury_record():
    from skimage import data

    r = MiddleburySource().load(KEY)
    left, _, disp = data.stereo_motorcycle()
    assert r.rgb.shape == (500, 741, 3) and r.seg is None
    assert np.array_equal(r.rgb, left)
    ok = np.isfinite(disp)
    assert (~ok).any() and np.all(r.depth[~ok] == 0)
    i, j = np.argwhere(ok)[1234]
    assert r.depth[i, j] == pytest.approx(994.978 * 193.001 / (disp[i, j] + 31.086) / 1000, rel=1e-5)
    small = MiddleburySource(size=(120, 160), split="train")
    assert small.splits() == {"train": [KEY]}
    rs = small.load(KEY)
    assert rs.rgb.shape == (120, 160, 3) and rs.depth.shape == (120, 160)
    assert 0.5 < np.median(rs.depth[rs.depth > 0]) < 10


def test_demo_and_registry():
    src = get_source("demo", n_train=2, n_test=3, size=(32, 48))
    sp = src.splits()
    assert sp["test"][-1] == KEY and len(sp["test"]) == 4 and src.num_classes == 8
    assert src.load(KEY).rgb.shape == (32, 48, 3)
    assert isinstance(get_source("synthetic", n_train=1), SyntheticSource)
    with pytest.raises(BsrError, match="unknown source"):
        get_source("nope")
    with pytest.raises(BsrError, match="twice"):
        CombinedSource(SyntheticSource(n_train=1), SyntheticSource(n_train=1)).splits()
    assert not isinstance(demo_source(middlebury=False), CombinedSource)


def test_registry_is_lazy():
    code = ("import sys, bsrdata.sources as s; s.get_source('synthetic'); "
            "print(any(m in sys.modules for m in ('bsrdata.sources.nyuv2', 'bsrdata.sources.cityscapes', "
            "'bsrdata.sources.folder', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_register_source_and_unknown_message():
    from bsrdata.sources import SOURCES, register_source

    @register_source("tiny_test_source")
    def tiny(**options):
        return SyntheticSource(n_train=1, **options)

    try:
        assert "tiny_test_source" in SOURCES.names()
        assert isinstance(get_source("tiny_test_source", n_test=1), SyntheticSource)
        with pytest.raises(BsrError, match="registered twice"):
            register_source("tiny_test_source")(lambda: None)
    finally:
        SOURCES._objects.pop("tiny_test_source", None)
    with pytest.raises(BsrError) as err:
        get_source("nope")
    assert str(err.value).startswith("unknown source 'nope' (known: cityscapes, demo, folder, ")


def test_cli_commands_are_lazy():
    """``bsr build`` (and the command list in --help) import neither torch nor the other commands' modules."""
    code = ("import sys\nfrom bsrdata.cli.main import COMMANDS, cli\n"
            "assert sorted(COMMANDS) == ['bench', 'build', 'convert', 'depth', 'eval', 'export', 'info', 'merge', "
            "'preview', 'reproduce', 'sr', 'train', 'verify'], sorted(COMMANDS)\n"
            "cli.main(['build', '--help'], standalone_mode=False)\n"
            "print(any(m in sys.modules for m in ('torch', 'bsrdata.cli.train', 'bsrdata.cli.bench')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
