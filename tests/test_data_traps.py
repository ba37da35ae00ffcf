"""Silent data traps made loud: depth outliers that set the CoC normalisation (warning + --depth-clip),
fewer test images than groups (warning in build and verify), converted input (grey / RGBA / 16-bit RGB,
counted in the summary), frames of different sizes (named file; --size HxW crop or resize)."""

import json
import os
import shutil

import fakes
import numpy as np
import pytest
from PIL import Image

from bsrdata.build import build_dataset
from bsrdata.degrade import DegradeConfig, synthesize
from bsrdata.errors import BsrError
from bsrdata.optics import clip_depth, coc_normalised, depth_outlier_stretch
from bsrdata.sources.base import Record
from bsrdata.sources.folder import FolderSource, read_image
from bsrdata.verify import verify_dataset


def _ramp(h=40, w=56):
    return 1.0 + 3.0 * np.tile(np.linspace(0, 1, w), (h, 1))  # 1..4 m


def test_outlier_stretch_formula():
    z = _ramp()
    valid = np.ones_like(z, bool)
    assert depth_outlier_stretch(z, valid) == pytest.approx(
        (1 / z.min() - 1 / z.max()) / np.subtract(*np.percentile(1 / z, [99.5, 0.5])))
    assert depth_outlier_stretch(z, valid) < 1.1
    z2 = z.copy()
    z2.flat[:5] = 0.02  # 5 of 2240 pixels at 2 cm
    k = depth_outlier_stretch(z2, valid)
    assert k == pytest.approx((1 / 0.02 - 1 / 4.0) / np.subtract(*np.percentile(1 / z2, [99.5, 0.5])))
    assert k > 50


def test_outliers_compress_the_blur_and_depth_clip_restores_it():
    z = _ramp()
    z2 = z.copy()
    z2.flat[:5] = 0.02
    valid = np.ones_like(z, bool)
    plain = coc_normalised(z, 4.0, 21)
    spoilt = coc_normalised(z2, 4.0, 21)
    assert plain.max() == pytest.approx(21) and np.median(spoilt) < 0.05 * np.median(plain)
    clipped, (lo, hi) = clip_depth(z2, valid, 1.0)
    assert lo == pytest.approx(np.percentile(z2, 1)) and hi == pytest.approx(np.percentile(z2, 99))
    assert np.median(coc_normalised(clipped, 4.0, 21)) > 0.8 * np.median(plain)
    # through the generator: the clip is applied and recorded
    rec = Record("k", np.zeros((40, 56, 3), np.uint8), z2.astype(np.float32))
    s0 = synthesize(rec, DegradeConfig(max_coc=21), 0, False)
    s1 = synthesize(rec, DegradeConfig(max_coc=21, depth_clip=1.0), 0, False)
    assert np.median(s1["blur"]) > 5 * max(np.median(s0["blur"]), 0.01)
    assert s1["params"]["depth_clip_m"] == [pytest.approx(lo), pytest.approx(hi)]
    assert "depth_clip_m" not in s0["params"]
    assert "depth_clip" not in DegradeConfig().to_attrs() and DegradeConfig(depth_clip=1).to_attrs()["depth_clip"] == 1
    with pytest.raises(BsrError, match="depth_clip"):
        DegradeConfig(depth_clip=50)


@pytest.fixture
def outlier_folder(tmp_path):
    root = tmp_path / "src"
    fakes.make_folder(root, splits={"train": 2, "test": 5}, h=32, w=40)
    p = root / "depth" / "test" / "testimg01.png"
    mm = np.asarray(Image.open(p)).astype(np.uint16)
    mm[2, 2:6] = 20  # four pixels at 2 cm
    Image.fromarray(mm).save(p)
    return root


def test_build_warns_on_outliers_and_records_the_clip(outlier_folder, tmp_path):
    src = FolderSource(outlier_folder, num_classes=5)
    s = build_dataset(src, tmp_path / "a", DegradeConfig(max_coc=7), seed=0, shard_size=4)
    warn = [w for w in s["warnings"] if "depth outliers" in w]
    assert len(warn) == 1 and "worst testimg01" in warn[0] and "--depth-clip 1" in warn[0], s["warnings"]
    m = json.load(open(tmp_path / "a" / "manifest.json"))
    assert "warnings" not in m["summary"]  # run facts live in the build log
    s2 = build_dataset(src, tmp_path / "b", DegradeConfig(max_coc=7, depth_clip=1.0), seed=0, shard_size=4)
    assert not any("depth outliers" in w for w in s2["warnings"]), s2["warnings"]
    m2 = json.load(open(tmp_path / "b" / "manifest.json"))
    assert m2["attrs"]["depth_clip"] == 1.0


def test_recipe_records_depth_clip_as_a_deviation():
    from bsrdata.recipes import load_recipe, with_deviations

    rec = load_recipe("nyuv2-bsr-1.0")
    cfg = DegradeConfig.from_dict(dict(rec["degrade"], depth_clip=0.5))
    assert with_deviations(rec, cfg, rec["seed"])["deviations"] == {"degrade": {"depth_clip": 0.5}}
    assert with_deviations(rec, DegradeConfig.from_dict(rec["degrade"]), rec["seed"])["deviations"] is None


def test_fewer_test_images_than_groups_warns(tmp_path):
    root = tmp_path / "src"
    fakes.make_folder(root, splits={"train": 2, "test": 3}, h=16, w=20)
    s = build_dataset(FolderSource(root, num_classes=5), tmp_path / "ds", DegradeConfig(max_coc=5), seed=0)
    assert any("test split has 3 images" in w for w in s["warnings"]), s["warnings"]
    rep = verify_dataset(tmp_path / "ds")
    assert rep["problems"] == [] and any("none holds an invariant image" in w for w in rep["warnings"])


def test_five_test_images_do_not_warn(tmp_path):
    root = tmp_path / "src"
    fakes.make_folder(root, splits={"train": 2, "test": 5}, h=16, w=20)
    s = build_dataset(FolderSource(root, num_classes=5), tmp_path / "ds", DegradeConfig(max_coc=5), seed=0)
    assert not any("test split" in w for w in s["warnings"])
    assert verify_dataset(tmp_path / "ds")["warnings"] == []


def test_image_conversions_are_exact_and_reported(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    grey = rgb[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    Image.fromarray(np.dstack([rgb, np.full((6, 7), 9, np.uint8)]), "RGBA").save(tmp_path / "a.png")
    import cv2

    deep = rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep[..., ::-1])
    notes = []
    assert np.array_equal(read_image(tmp_path / "g.png", kind="rgb", notes=notes), np.dstack([grey] * 3))
    assert np.array_equal(read_image(tmp_path / "a.png", kind="rgb", notes=notes), rgb)
    got = read_image(tmp_path / "d.png", kind="rgb", notes=notes)
    assert np.array_equal(got, np.round(deep.astype(np.float64) * 255 / 65535).astype(np.uint8))
    assert notes == ["grey (expanded to RGB)", "RGBA (alpha dropped)", "16-bit RGB (rounded to 8 bits)"]
    plain = []
    Image.fromarray(rgb).save(tmp_path / "p.png")
    read_image(tmp_path / "p.png", kind="rgb", notes=plain)
    assert plain == []


def test_build_summary_counts_converted_input(tmp_path):
    root = tmp_path / "src"
    fakes.make_folder(root, splits={"train": 2, "test": 5}, h=16, w=20)
    p = root / "rgb" / "test" / "testimg00.png"
    Image.fromarray(np.asarray(Image.open(p))[..., 0], "L").save(p)
    s = build_dataset(FolderSource(root, num_classes=5), tmp_path / "ds", DegradeConfig(max_coc=5), seed=0)
    # the test image is rendered twice when it is a fold's invariant member, so count >= 1
    note = [w for w in s["warnings"] if w.startswith("note: renderings from converted input")]
    assert len(note) == 1 and "grey (expanded to RGB)" in note[0], s["warnings"]


@pytest.fixture
def mixed(tmp_path):
    root = tmp_path / "src"
    fakes.make_folder(root, splits={"train": 2, "test": 5}, h=24, w=32)
    other = tmp_path / "other"
    fakes.make_folder(other, splits={"test": 1}, h=30, w=36, seed=5)
    for kind in ("rgb", "depth", "seg"):
        shutil.copy(other / kind / "test" / "testimg00.png", root / kind / "test" / "odd.png")
    return root


def test_mixed_sizes_name_the_file(mixed):
    with pytest.raises(BsrError) as e:
        FolderSource(mixed, num_classes=5)
    msg = str(e.value)
    assert msg.startswith(os.path.join(str(mixed), "rgb", "test", "odd.png") + ": 30x36, but most frames are 24x32")
    assert "--size HxW" in msg


@pytest.mark.parametrize("fit", ["crop", "resize"])
def test_size_option_builds_mixed_folders(mixed, tmp_path, fit):
    src = FolderSource(mixed, num_classes=5, size=(24, 32), fit=fit)
    rec = src.load("odd")
    assert rec.rgb.shape == (24, 32, 3) and rec.depth.shape == (24, 32) and rec.seg.shape == (24, 32)
    if fit == "crop":
        full = np.asarray(Image.open(mixed / "rgb" / "test" / "odd.png"))
        assert np.array_equal(rec.rgb, full[3:27, 2:34])
        assert rec.notes == ("cropped 30x36 -> 24x32",)
    else:
        assert rec.notes == ("resized 30x36 -> 24x32",)
        labels = set(np.unique(np.asarray(Image.open(mixed / "seg" / "test" / "odd.png"))))
        assert set(np.unique(rec.seg)) <= labels  # nearest: no invented classes
    assert src.load("testimg00").notes == ()
    s = build_dataset(src, tmp_path / "ds", DegradeConfig(max_coc=5), seed=0)
    m = json.load(open(tmp_path / "ds" / "manifest.json"))
    assert m["source"]["options"] == {"size": "24x32", "fit": fit}
    assert verify_dataset(tmp_path / "ds")["problems"] == []
    assert any(fit[:4] in w for w in s["warnings"] if w.startswith("note:"))


def test_size_crop_refuses_a_smaller_frame(mixed):
    src = FolderSource(mixed, num_classes=5, size=(28, 34))
    with pytest.raises(BsrError, match=r"testimg00.png: 24x32 is smaller than --size 28x34 \(use --fit resize\)"):
        src.load("testimg00")
