"""End to end through the CLI: fakes in the real formats -> `bsr build nyuv2|cityscapes` -> `bsr verify --full`
-> `bsr export --format cmos`; bad input -> one line, non-zero exit, nothing verify accepts."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from bsrdata import open_dataset
from bsrdata.recipes import expected_counts, load_recipe

try:
    from tests import fakes
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import fakes

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def bsr(*args):
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "bsrdata.cli.main", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=600)


def small_recipe(path, name, n_images, hr_size):
    """The release recipe with its expected counts scaled to the fake's split sizes (same rule)."""
    r = load_recipe(name)
    r["expected"] = dict(expected_counts(n_images), hr_size=list(hr_size), num_classes=r["expected"]["num_classes"])
    with open(path, "w") as fh:
        json.dump(r, fh)
    return path


def error_line(res):
    assert res.returncode != 0, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("bsr: error:")]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def not_accepted(out):
    """Nothing verify would accept as complete."""
    if not os.path.isdir(out):
        return
    res = bsr("verify", out, "--full", "-q")
    assert res.returncode != 0, res.stdout


def check_counts_rule(out, n_by_split, grouped="test"):
    m = json.load(open(os.path.join(out, "manifest.json")))
    for split, n in n_by_split.items():
        keys = m["splits"][split]
        n_inv = sum(sum(bool(v) for v in sh["invariant"]) for sh in keys["shards"])
        assert n_inv == (5 * (n // 5) if split == grouped else n // 5), split
    folds = []
    for g in map(str, range(1, 6)):
        members = m["groups"][g]
        assert len(members) == n_by_split[grouped]
        fold = {e["key"] for e in members if e["invariant"]}
        assert len(fold) == n_by_split[grouped] // 5
        folds.append(fold)
    assert len(set().union(*folds)) == 5 * (n_by_split[grouped] // 5)  # disjoint
    return m


@pytest.fixture(scope="module")
def nyu_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("nyub")
    f = fakes.make_nyuv2(base / "src", n=20, h=48, w=64, train=list(range(1, 21, 2)), test=list(range(2, 21, 2)))
    rec = small_recipe(base / "nyu-small.json", "nyuv2-bsr-1.0", {"train": 10, "test": 10}, (48, 64))
    out = base / "out"
    res = bsr("build", "nyuv2", "--mat", f["mat"], "--splits", f["splits"], "--class-map", f["class_map"],
              "--recipe", rec, "--out", out, "--workers", 2, "--shard-size", 6, "-q")
    assert res.returncode == 0, res.stderr
    return f, out, base


def test_nyuv2_build_verify_content(nyu_build):
    f, out, _base = nyu_build
    res = bsr("verify", out, "--full", "-q")
    assert res.returncode == 0, res.stderr + res.stdout
    m = check_counts_rule(out, {"train": 10, "test": 10})
    assert m["recipe"]["name"] == "nyuv2-bsr" and m["recipe"]["degrade"]["max_coc"] == 21
    view = open_dataset(out, "train")
    assert list(view.keys) == [f"nyuv2-{i:04d}" for i in range(1, 21, 2)]
    for i in (0, 7):
        s = view[i]
        idx = int(s["key"].split("-")[1]) - 1
        np.testing.assert_array_equal(s["hr"], f["images"][idx])  # right frame, right orientation
        raw = f["labels"][idx].astype(np.int64)
        want = np.where(raw == 0, 255, (7 * raw + 3) % 40).astype(np.uint8)
        want[:8], want[-8:], want[:, :8], want[:, -8:] = 255, 255, 255, 255  # the recipe's 8-px border
        np.testing.assert_array_equal(s["seg"], want)
        assert s["blur"].max() <= 5.0 + 1e-6


def test_nyuv2_export_cmos(nyu_build, tmp_path):
    _f, out, _base = nyu_build
    res = bsr("export", out, "--format", "cmos", "--out", tmp_path / "cmos")
    assert res.returncode == 0, res.stderr
    c = tmp_path / "cmos"
    assert sorted(os.listdir(c / "train")) == ["GT", "LRx4", "blur", "semseg"]
    # the NYUv2 layout: the grouped test split is val/ (the public NYUv2 configs read val/GT, val/Group1)
    assert sorted(os.listdir(c)) == ["bsr_export.json", "cmos_test_datasets.yml", "train", "val"]
    assert sorted(os.listdir(c / "val")) == ["GT", "Group1", "Group2", "Group3", "Group4", "Group5", "semseg"]
    assert len(os.listdir(c / "val" / "Group5" / "LRx4")) == 10
    assert sorted(os.listdir(c / "val" / "GT")) == sorted(os.listdir(c / "val" / "Group2" / "blur"))
    view = open_dataset(out, "train")
    s = view[0]
    lab = cv2.imread(str(c / "train" / "semseg" / f"{s['key']}.png"), cv2.IMREAD_UNCHANGED)
    assert lab.ndim == 2  # single channel: 0 = void, class k stored as k + 1
    np.testing.assert_array_equal(np.where(lab == 0, 255, lab.astype(np.int64) - 1), s["seg"])


def test_nyuv2_release_recipe_rejects_wrong_counts(nyu_build, tmp_path):
    f, _out, _base = nyu_build
    out = tmp_path / "o"
    res = bsr("build", "nyuv2", "--mat", f["mat"], "--splits", f["splits"], "--class-map", f["class_map"],
              "--out", out, "-q")
    line = error_line(res)
    assert "nyuv2-bsr-1.0" in line
    not_accepted(out)


def test_nyuv2_bad_inputs_through_cli(nyu_build, tmp_path):
    f, _out, base = nyu_build
    rec = base / "nyu-small.json"
    bad_split = fakes.write_splits_mat(tmp_path / "splits_bad.mat", [1, 2, 21], [3])
    cases = [
        (["--mat", tmp_path / "missing.mat", "--splits", f["splits"], "--class-map", f["class_map"]], "missing.mat"),
        (["--mat", f["splits"], "--splits", f["splits"], "--class-map", f["class_map"]], "7.3"),
        (["--mat", f["mat"], "--splits", bad_split, "--class-map", f["class_map"]], "splits_bad.mat"),
        (["--mat", f["mat"], "--splits", f["splits"],
          "--class-map", fakes.write_class_map(tmp_path / "cm40.mat", np.ones(40))], "cm40.mat"),
    ]
    for i, (args, what) in enumerate(cases):
        out = tmp_path / f"o{i}"
        res = bsr("build", "nyuv2", *args, "--recipe", rec, "--out", out, "-q")
        assert what in error_line(res)
        not_accepted(out)


@pytest.fixture(scope="module")
def city_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("cityb")
    truth = fakes.make_cityscapes(base / "src", counts={"train": 5, "val": 5, "test": 5}, h=64, w=96)
    rec = small_recipe(base / "city-small.json", "cityscapes-bsr-1.0", {"train": 5, "val": 5, "test": 5}, (64, 96))
    out = base / "out"
    res = bsr("build", "cityscapes", "--root", base / "src", "--recipe", rec, "--out", out, "--workers", 2,
              "--shard-size", 4, "-q")
    assert res.returncode == 0, res.stderr
    return truth, out, base


def test_cityscapes_build_verify_export(city_build, tmp_path):
    truth, out, _base = city_build
    res = bsr("verify", out, "--full", "-q")
    assert res.returncode == 0, res.stderr + res.stdout
    m = check_counts_rule(out, {"train": 5, "val": 5, "test": 5})
    assert m["recipe"]["name"] == "cityscapes-bsr"
    assert set(m["splits"]) == {"train", "val", "test"}
    assert m["attrs"]["num_classes"] == 19 and m["attrs"]["max_coc"] == 61
    val = open_dataset(out, "val")
    for i in range(len(val)):
        s = val[i]
        np.testing.assert_array_equal(s["hr"], truth[s["key"]]["rgb"])
        assert s["seg"] is not None and s["blur"].max() <= 15.0 + 1e-6
    test = open_dataset(out, "test")
    assert test[0]["seg"] is None
    res = bsr("export", out, "--format", "cmos", "--out", tmp_path / "cmos")
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path / "cmos")) == ["bsr_export.json", "cmos_test_datasets.yml", "test", "train",
                                                     "val"]
    assert sorted(os.listdir(tmp_path / "cmos" / "val")) == ["GT", "LRx4", "blur", "semseg"]
    assert "semseg" not in os.listdir(tmp_path / "cmos" / "test")
    s = val[0]  # the Cityscapes layout: three channels, each the train id, 255 void
    lab = cv2.imread(str(tmp_path / "cmos" / "val" / "semseg" / f"{s['key']}.png"), cv2.IMREAD_UNCHANGED)
    assert lab.ndim == 3 and lab.shape[2] == 3
    for ch in range(3):
        np.testing.assert_array_equal(lab[..., ch], s["seg"])


def test_cityscapes_bad_inputs_through_cli(city_build, tmp_path):
    import shutil

    truth, _out, base = city_build
    rec = base / "city-small.json"
    train = sorted(k for k, t in truth.items() if t["split"] == "train")
    cam = fakes.camera_json(0.2, 2000.0)
    del cam["extrinsic"]["baseline"]

    def rel(key, kind):
        return os.path.relpath(truth[key]["paths"][kind], base / "src")

    key = train[0]  # the first frame fails before any rendering; the last case fails inside a worker

    def corrupt_camera(root):
        with open(root / rel(key, "camera"), "w") as fh:
            json.dump(cam, fh)

    def no_valid_disp(root):
        from bsrdata.sources.folder import write_png_atomic

        write_png_atomic(root / rel(key, "disparity"), np.zeros((64, 96), np.uint16))

    def bad_label(root):
        from bsrdata.sources.folder import write_png_atomic

        write_png_atomic(root / rel(key, "gtFine"), np.full((64, 96), 99, np.uint8))

    def corrupt_png(root):
        p = root / rel(key, "leftImg8bit")
        p.write_bytes(p.read_bytes()[:200])

    def unequal(root):
        from bsrdata.sources.folder import write_png_atomic

        write_png_atomic(root / rel(key, "disparity"), np.ones((60, 96), np.uint16) * 900)

    cases = [(corrupt_camera, "baseline"), (no_valid_disp, "no valid pixel"), (bad_label, "99"),
             (corrupt_png, "_leftImg8bit.png"), (unequal, "differs"), (corrupt_camera, "baseline")]
    for i, (mutate, what) in enumerate(cases):
        late = i == len(cases) - 1
        if late:
            key = train[-1]
        root = tmp_path / f"src{i}"
        shutil.copytree(base / "src", root)
        mutate(root)
        out = tmp_path / f"o{i}"
        res = bsr("build", "cityscapes", "--root", root, "--recipe", rec, "--out", out,
                  "--workers", 2 if late else 1, "--shard-size", 2, "-q")
        line = error_line(res)
        assert what in line and key in line, line
        not_accepted(out)


def test_export_cli_bad_output(nyu_build, tmp_path):
    _f, out, _base = nyu_build
    f = tmp_path / "afile"
    f.write_text("x")
    res = bsr("export", out, "--format", "cmos", "--out", f / "sub")
    assert "afile" in error_line(res)
    res = bsr("export", tmp_path / "nodataset", "--format", "cmos", "--out", tmp_path / "e")
    error_line(res)
    assert not (tmp_path / "e").exists()


def test_folder_build_verify_and_bad_depth(tmp_path):
    truth = fakes.make_folder(tmp_path / "src", splits={"train": 3, "test": 5}, h=24, w=32)
    out = tmp_path / "out"
    res = bsr("build", "folder", "--root", tmp_path / "src", "--out", out, "--max-coc", 9, "-q")
    assert res.returncode == 0, res.stderr
    assert bsr("verify", out, "--full", "-q").returncode == 0
    m = check_counts_rule(out, {"train": 3, "test": 5})
    assert m["attrs"]["num_classes"] == 5
    s = open_dataset(out, "test", group=1)[0]
    np.testing.assert_array_equal(s["hr"], truth[s["key"]]["rgb"])
    np.testing.assert_array_equal(s["seg"], truth[s["key"]]["seg"])
    from bsrdata.sources.folder import write_png_atomic

    write_png_atomic(tmp_path / "src" / "depth" / "test" / "testimg03.png", np.ones((24, 32), np.uint8))
    res = bsr("build", "folder", "--root", tmp_path / "src", "--out", tmp_path / "bad", "--max-coc", 9, "-q")
    assert "testimg03.png" in error_line(res)
    not_accepted(tmp_path / "bad")
