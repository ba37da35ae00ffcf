"""``bsr export --format cmos`` read back with the public CMOS loader's rules (written here from its
description in docs/sources.md "Export for existing code", not from its code) and compared with
``open_dataset`` item by item, for both layouts (``nyuv2``: grouped test split as ``val/``, semseg one
channel k+1; ``cityscapes``: splits by name, semseg >= 3 channels with the train id in channel 0)."""

import json
import os

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from bsrdata import open_dataset
from bsrdata.cli.main import main
from bsrdata.errors import BsrError
from bsrdata.export import export_dataset
from bsrdata.export_cmos import choose_layout
from bsrdata.shards import write_dataset

ATTRS = {"scale": 4, "max_coc": 21, "sigma_max": 5.0, "renderer": "gather", "downsample": "direct",
         "noise": 0.0, "generator_version": "test"}


# ---------------------------------------------------------------------------------- the loader's rules
IMG_EXTENSIONS = [".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".ppm", ".PPM", ".bmp", ".BMP"]


def list_images(folder):
    """Every image file under ``folder``, walked recursively, sorted by full path."""
    assert os.path.isdir(folder), folder
    found = []
    for dirpath, _, names in sorted(os.walk(folder)):
        for n in sorted(names):
            if any(n.endswith(e) for e in IMG_EXTENSIONS):
                found.append(os.path.join(dirpath, n))
    assert found, f"{folder} has no image"
    return sorted(found)


def read_entry(entry):
    """Items of one dataset entry of an option file (name, dataroot_GT/LR/blur/seg), paired by index."""
    gt, lr, blur = (list_images(entry[k]) for k in ("dataroot_GT", "dataroot_LR", "dataroot_blur"))
    seg = list_images(entry["dataroot_seg"]) if entry.get("dataroot_seg") else None
    assert len(gt) == len(lr) == len(blur) and (seg is None or len(seg) == len(lr))
    items = []
    for i in range(len(lr)):
        hr_img = np.array(Image.open(gt[i]))
        lr_img = np.array(Image.open(lr[i]))
        assert hr_img.dtype == np.uint8 and hr_img.ndim == 3 and hr_img.shape[2] == 3, gt[i]
        assert lr_img.dtype == np.uint8 and lr_img.ndim == 3 and lr_img.shape[2] == 3, lr[i]
        b = cv2.imread(blur[i], cv2.IMREAD_UNCHANGED)
        assert b is not None and b.ndim == 3 and b.shape[2] == 3, blur[i]  # channel 1 is taken
        sigma = (np.float32(b) / 10.0)[:, :, 1]
        if seg is None:
            lab = np.zeros_like(sigma)
        elif "NYUv2" in entry["name"]:
            lab = np.array(Image.open(seg[i])).astype(np.float32)
            assert lab.ndim == 2, seg[i]
            lab[lab == 0] = 256
            lab = lab - 1
        else:
            a = np.array(Image.open(seg[i]))
            assert a.ndim == 3 and a.shape[2] >= 3, seg[i]  # a single-channel file fails in the loader
            lab = a.astype(np.float32)[:, :, 0]
        names = {os.path.basename(p) for p in (gt[i], lr[i], blur[i]) + ((seg[i],) if seg else ())}
        assert len(names) == 1, names  # the loader does not check this; the export guarantees it
        items.append({"name": names.pop(), "hr": hr_img, "lr": lr_img, "blur": sigma, "seg": lab})
    return items


def compare(items, view, labelled=True):
    """Reader items (sorted by file name) against the dataset view's samples sorted by key."""
    samples = sorted((view[i] for i in range(len(view))), key=lambda s: s["key"])
    assert len(items) == len(samples)
    for it, s in zip(items, samples):
        assert it["name"] == f"{s['key']}.png"
        np.testing.assert_array_equal(it["hr"], s["hr"])
        np.testing.assert_array_equal(it["lr"], s["lr"])
        assert np.abs(it["blur"] - s["blur"]).max() <= 0.05 + 1e-6  # σ stored to 0.1 px
        if labelled:
            np.testing.assert_array_equal(it["seg"], s["seg"].astype(np.float32))  # 255 = void kept


# ------------------------------------------------------------------------------------------- datasets
def _samples(rng, prefix, n, h, w, ncls, n_inv):
    out = []
    for i in range(n):
        hr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        seg = ((np.arange(h * w).reshape(h, w) + 7 * i) % ncls).astype(np.uint8)
        seg[rng.random((h, w)) < 0.1] = 255
        inv = i < n_inv
        blur = (np.full((h, w), 1.25) if inv else rng.integers(0, 201, (h, w)) * 0.025).astype(np.float32)
        out.append({"key": f"{prefix}{i:03d}", "hr": hr, "lr": hr[::4, ::4].copy(), "blur": blur, "seg": seg,
                    "invariant": inv})
    return out


def make_dataset(root, source, ncls, val=0, n_test=5, test_labels=True, sigma_max=5.0):
    """train (3), optional ungrouped val, and a grouped test split of ``n_test`` keys in 5 groups (group g
    makes fold g invariant), as bsrdata.plan lays them out."""
    rng = np.random.default_rng(len(source) + ncls)
    h, w = 16, 24
    splits = {"train": _samples(rng, "tr", 3, h, w, ncls, 0)}
    if val:
        splits["val"] = _samples(rng, "va", val, h, w, ncls, 1)
    test = _samples(rng, "te", n_test, h, w, ncls, 0)
    fold = n_test // 5
    for g in range(5):
        for i in range(g * fold, (g + 1) * fold):
            s = dict(test[i], invariant=True, blur=np.full((h, w), 0.5 + g, np.float32),
                     lr=(255 - test[i]["lr"]).astype(np.uint8))
            test.append(s)
    if not test_labels:
        for s in test:
            s.pop("seg")
    splits["test"] = test
    groups = {str(g + 1): [(f"te{i:03d}", g * fold <= i < (g + 1) * fold) for i in range(n_test)] for g in range(5)}
    write_dataset(root, splits, attrs=dict(ATTRS, sigma_max=sigma_max, max_coc=int(4 * sigma_max + 1)),
                  groups=groups, source={"name": source, "num_classes": ncls}, seed=1)
    return root


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("nyu") / "ds", "nyuv2", 40)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("city") / "ds", "cityscapes", 19, val=5, sigma_max=15.0)


def _entries(out):
    doc = yaml.safe_load((out / "cmos_test_datasets.yml").read_text())
    return [doc["datasets"][k] for k in sorted(doc["datasets"])]


# ---------------------------------------------------------------------------------------------- tests
def test_nyuv2_layout_read_back_like_the_public_loader(nyu, tmp_path):
    out = tmp_path / "NYUv2-BSR"
    summary = export_dataset(nyu, out, "cmos")
    assert summary["layout"] == "nyuv2" and summary["folders"] == {"train": "train", "test": "val"}
    assert sorted(os.listdir(out)) == ["bsr_export.json", "cmos_test_datasets.yml", "train", "val"]
    assert sorted(os.listdir(out / "val")) == ["GT"] + [f"Group{g}" for g in range(1, 6)] + ["semseg"]
    # the shipped NYUv2 option files' paths, relative to the dataset folder
    train = read_entry({"name": "NYUv2-BSR", "dataroot_GT": out / "train/GT", "dataroot_LR": out / "train/LRx4",
                        "dataroot_blur": out / "train/blur", "dataroot_seg": out / "train/semseg"})
    compare(train, open_dataset(nyu, "train"))
    assert max(float(it["seg"][it["seg"] != 255].max()) for it in train) == 39  # class 39 stored as 40
    entries = _entries(out)
    assert [e["name"] for e in entries] == [f"NYUv2-BSR-Group{g}" for g in range(1, 6)]
    for g, e in enumerate(entries, start=1):
        assert e["dataroot_GT"] == str(out / "val/GT") and e["dataroot_LR"] == str(out / f"val/Group{g}/LRx4")
        assert e["dataroot_seg"] == str(out / "val/semseg")
        items = read_entry(e)
        compare(items, open_dataset(nyu, "test", group=g))
        inv = [it for it in items if np.ptp(it["blur"]) == 0 and it["blur"][0, 0] == 0.5 + (g - 1)]
        assert len(inv) == 1  # fold g is the invariant one in group g
    rec = json.loads((out / "bsr_export.json").read_text())
    assert rec["cmos_layout"]["grouped_folder"] == "val" and rec["cmos_layout"]["chosen_by"] == "source"
    assert "cmos_test_datasets.yml" in rec["files"]


def test_cityscapes_layout_read_back_like_the_public_loader(city, tmp_path):
    out = tmp_path / "Cityscapes-BSR"
    summary = export_dataset(city, out, "cmos")
    assert summary["layout"] == "cityscapes"
    assert sorted(os.listdir(out)) == ["bsr_export.json", "cmos_test_datasets.yml", "test", "train", "val"]
    for split in ("train", "val"):  # the shipped Cityscapes train option file's entries
        items = read_entry({"name": f"Cityscapes-BSR-{split}", **{f"dataroot_{k}": out / split / f
                            for k, f in (("GT", "GT"), ("LR", "LRx4"), ("blur", "blur"), ("seg", "semseg"))}})
        compare(items, open_dataset(city, split))
        seg = np.array(Image.open(sorted((out / split / "semseg").iterdir())[0]))
        assert seg.shape[2] == 3 and (seg[..., 0] == seg[..., 1]).all() and (seg == 255).any()
    entries = _entries(out)
    assert [e["name"] for e in entries] == [f"Cityscapes-BSR-Group{g}" for g in range(1, 6)]
    for g, e in enumerate(entries, start=1):
        assert e["dataroot_GT"] == str(out / "test/GT") and e["dataroot_blur"] == str(out / f"test/Group{g}/blur")
        compare(read_entry(e), open_dataset(city, "test", group=g))
    # the shipped Cityscapes test option file reads no semseg: the loader then gives zeros
    e = dict(entries[0], dataroot_seg=None)
    assert all((it["seg"] == 0).all() for it in read_entry(e))
    # a NYUv2-named entry would read these files wrongly: the layout must match the option file's name
    with pytest.raises(AssertionError):
        read_entry(dict(entries[0], name="NYUv2-BSR-Group1"))


def test_layout_asked_for(nyu, city, tmp_path):
    out = tmp_path / "nyu_as_city"
    s = export_dataset(nyu, out, "cmos", layout="cityscapes")
    assert s["folders"]["test"] == "test" and not (out / "val").exists()
    for g, e in enumerate(_entries(out), start=1):
        assert "NYUv2" not in e["name"]
        compare(read_entry(e), open_dataset(nyu, "test", group=g))
    with pytest.raises(BsrError, match="also has a split named 'val'"):
        export_dataset(city, tmp_path / "x", "cmos", layout="nyuv2")
    with pytest.raises(BsrError, match="--layout"):
        export_dataset(nyu, tmp_path / "y", "png", layout="nyuv2")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_choose_layout():
    assert choose_layout("nyuv2", ["train", "test"], "test").folders == {"train": "train", "test": "val"}
    assert choose_layout("cityscapes", ["train", "val", "test"], "test").name == "cityscapes"
    lay = choose_layout("folder", ["train", "test"], "test")
    assert (lay.name, lay.chosen) == ("nyuv2", "splits")
    assert choose_layout("folder", ["train", "val", "test"], "test").name == "cityscapes"
    assert choose_layout("synthetic", ["train", "test"], None).folders == {"train": "train", "test": "test"}
    with pytest.raises(BsrError, match="--layout x"):
        choose_layout("nyuv2", ["train"], None, "x")


def test_cli_export_layout(nyu, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", str(nyu), "--format", "cmos", "--out", str(tmp_path / "o")])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    assert "layout nyuv2" in out.out and "test as val/" in out.out
    with pytest.raises(SystemExit) as e:
        main(["export", str(nyu), "--format", "cmos", "--layout", "cityscapes", "--out", str(tmp_path / "o"),
              "--overwrite"])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    assert "layout cityscapes" in out.out and sorted(os.listdir(tmp_path / "o"))[-1] == "train"
    assert (tmp_path / "o" / "test" / "Group1").is_dir() and not (tmp_path / "o" / "val").exists()
