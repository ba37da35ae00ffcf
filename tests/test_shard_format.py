"""Shard format 2 (Blosc, tiles, blur as codes) against format 1 (gzip): same samples, same training items;
old (format 1) shards written by the first writer keep reading; the compact (uint8) items + to_float equal
the default items; a crop reads only its window."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

from bsrdata import open_dataset
from bsrdata.dataset import BSRDataset, collate, to_float
from bsrdata.errors import BsrError
from bsrdata.shards import DEFAULT_SHARD_FORMAT, ShardWriter, encode_blur, read_sample, sigma_levels, write_dataset
from bsrdata.verify import verify_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
OLD = os.path.join(HERE, "data", "shard_v1")  # written by the format-1 writer (before format 2 existed)
ATTRS = {"scale": 4, "max_coc": 21, "sigma_max": 5.0, "coc_step": 0.1, "renderer": "layered",
         "downsample": "direct", "noise": 0.0, "floor_colour": False, "generator_version": "test",
         "num_classes": 5}


def _grid_sigma(rng, shape):
    """σ as the degradation makes it: σ(rint(c / 0.1) · 0.1) for a random CoC map c in [0, 21]."""
    from bsrdata import optics

    c = rng.uniform(0, 21, shape)
    return np.asarray(optics.sigma_from_coc(optics.quantise_coc(c, 0.1)), dtype=np.float32)


def _samples(n=5, h=32, w=48, seed=0):
    r = np.random.default_rng(seed)
    out = []
    for i in range(n):
        blur = _grid_sigma(r, (h, w)) if i != 1 else np.full((h, w), _grid_sigma(r, (1,))[0], np.float32)
        out.append({"key": f"k{i}", "hr": r.integers(0, 256, (h, w, 3)).astype(np.uint8),
                    "lr": r.integers(0, 256, (h // 4, w // 4, 3)).astype(np.uint8), "blur": blur,
                    "seg": r.integers(0, 5, (h, w)).astype(np.uint8) if i != 2 else None,
                    "invariant": i == 1, "params": {"i": i}})
    return out


def _both(tmp_path, ss, **kw):
    for fmt in (1, 2):
        write_dataset(tmp_path / f"f{fmt}", {"train": ss}, attrs=ATTRS, shard_size=3, shard_format=fmt, **kw)
    return tmp_path / "f1", tmp_path / "f2"


def test_default_is_format_2():
    assert DEFAULT_SHARD_FORMAT == 2


def test_same_samples_in_both_formats(tmp_path):
    ss = _samples()
    r1, r2 = _both(tmp_path, ss)
    v1, v2 = open_dataset(r1, "train"), open_dataset(r2, "train")
    for i, s in enumerate(ss):
        a, b = v1[i], v2[i]
        for k in ("hr", "lr", "blur", "seg"):
            want = s[k] if s[k] is not None else (np.full((32, 48), 255, np.uint8) if k == "seg" else None)
            assert np.array_equal(a[k], want) and np.array_equal(b[k], want), (i, k)
        assert b["blur"].dtype == np.float32 and a["params"] == b["params"] == {"i": i}
    with h5py.File(r2 / "train" / "train-00000.h5", "r") as f:
        assert f.attrs["shard_format"] == 2 and f["blur"].dtype == np.uint16
        assert f["hr"].chunks == (1, 32, 48, 3)  # frames smaller than a tile: one chunk per sample
    assert json.loads((r2 / "manifest.json").read_text())["attrs"]["shard_format"] == 2
    assert "shard_format" not in json.loads((r1 / "manifest.json").read_text())["attrs"]
    for r in (r1, r2):
        assert verify_dataset(r, full=True)["problems"] == []


def test_tiles_and_windows(tmp_path, monkeypatch):
    """Maps are chunked in tiles; read(window) equals the slice of the full sample in both formats."""
    import bsrdata.shards as shards

    monkeypatch.setattr(shards, "TILE", 16)
    ss = _samples(n=3)
    r1, r2 = _both(tmp_path, ss)
    with h5py.File(r2 / "train" / "train-00000.h5", "r") as f:
        assert f["hr"].chunks == (1, 16, 16, 3) and f["blur"].chunks == (1, 16, 16)
        assert f["lr"].chunks == (1, 8, 12, 3)
    for r in (r1, r2):
        v = open_dataset(r, "train")
        for i in range(3):
            full = v[i]
            part = v.read(i, ("hr", "lr", "blur", "seg"), window=(8, 28, 4, 44))
            assert np.array_equal(part["hr"], full["hr"][8:28, 4:44])
            assert np.array_equal(part["blur"], full["blur"][8:28, 4:44])
            assert np.array_equal(part["seg"], full["seg"][8:28, 4:44])
            assert np.array_equal(part["lr"], full["lr"][2:7, 1:11])
            assert part["key"] == full["key"] and part["invariant"] == full["invariant"]


def test_grid_codes_are_exact():
    """The build's σ table (CoC grid of max_coc, coc_step) holds every σ the degradation can produce."""
    lv = sigma_levels(ATTRS)
    assert lv.dtype == np.float32 and np.all(np.diff(lv) > 0) and lv[0] == 0 and lv[-1] >= 5.0
    b = _grid_sigma(np.random.default_rng(3), (64, 64))
    assert np.array_equal(lv[encode_blur(b, lv)], b)
    with pytest.raises(BsrError, match="not on the shard's σ grid"):
        encode_blur(b + np.float32(1e-3), lv, "k9")
    assert sigma_levels({"max_coc": 21}) is None


def test_writer_refuses_off_grid_blur(tmp_path):
    s = _samples(n=1)[0]
    s["blur"] = s["blur"] + np.float32(0.01)
    p = tmp_path / "a.h5"
    with pytest.raises(BsrError, match="k0: blur σ"):
        with ShardWriter(p, 1, ATTRS, with_seg=True, blur_levels=sigma_levels(ATTRS)) as w:
            w.add(s)
    assert not os.listdir(tmp_path)
    with pytest.raises(BsrError, match="shard_format: 3"):
        ShardWriter(p, 1, ATTRS, with_seg=True, shard_format=3)


def test_format2_float_blur_and_bad_attribute(tmp_path):
    """Format 2 without a σ table stores float32 blur; an unknown shard_format attribute is refused."""
    ss = _samples(n=2)
    p = tmp_path / "a.h5"
    with ShardWriter(p, 2, ATTRS, with_seg=True) as w:
        for s in ss:
            w.add(s)
    with h5py.File(p, "r") as f:
        assert f["blur"].dtype == np.float32 and "blur_levels" not in f
    assert np.array_equal(read_sample(p, 1)["blur"], ss[1]["blur"])
    with h5py.File(p, "r+") as f:
        f.attrs["shard_format"] = 7
    with pytest.raises(BsrError, match="a.h5: shard_format attribute 7"):
        read_sample(p, 0)


def test_old_shards_keep_reading(tmp_path):
    """tests/data/shard_v1: a dataset written by the format-1 writer; read, verified, trained on."""
    root = tmp_path / "old"
    shutil.copytree(OLD, root)
    exp = np.load(os.path.join(OLD, "expected.npz"))
    v = open_dataset(root, "train")
    assert len(v) == 3
    for i in range(3):
        s = v[i]
        for k in ("hr", "lr", "blur", "depth"):
            assert np.array_equal(s[k], exp[f"{k}{i}"]), (i, k)
        assert np.array_equal(s["seg"], exp[f"seg{i}"] if f"seg{i}" in exp else np.full((16, 24), 255, np.uint8))
    assert verify_dataset(root, full=True)["problems"] == []
    ds = BSRDataset(root, "train", crop=8, hflip=True)
    it = ds[0]
    assert it["hr"].shape == (3, 8, 8) and it["hr"].dtype == torch.float32


@pytest.mark.parametrize("kw", [dict(), dict(crop=16, hflip=True), dict(crop=(16, 24), zoom=(1, 1.5), hflip=True),
                                dict(zoom=(1.2, 1.5))])
def test_training_items_equal_across_formats_and_outputs(tmp_path, kw):
    """BSRDataset gives the same items from format 1 and format 2 shards, and output="uint8" + to_float
    gives exactly the default float items (the crop window read equals cropping the whole sample)."""
    ss = _samples(n=4)
    r1, r2 = _both(tmp_path, ss)
    a = BSRDataset(r1, "train", seed=5, **kw)
    b = BSRDataset(r2, "train", seed=5, **kw)
    c = BSRDataset(r2, "train", seed=5, output="uint8", **kw)
    for ep in (0, 1):
        for d in (a, b, c):
            d.set_epoch(ep)
        ia, ib, ic = [a[i] for i in range(4)], [b[i] for i in range(4)], [c[i] for i in range(4)]
        assert ic[0]["hr"].dtype == torch.uint8 and ic[0]["seg"].dtype == torch.uint8
        ba, bb, bc = collate(ia), collate(ib), to_float(collate(ic))
        for k in ("lr", "hr", "blur", "seg"):
            assert ba[k].dtype == bc[k].dtype and torch.equal(ba[k], bb[k]) and torch.equal(ba[k], bc[k]), k
        assert ba["key"] == bc["key"]


def test_uncropped_items_equal_the_stored_sample(tmp_path):
    ss = _samples(n=2)
    _, r2 = _both(tmp_path, ss)
    it = BSRDataset(r2, "train")[0]
    assert torch.equal(it["hr"], torch.from_numpy(ss[0]["hr"]).permute(2, 0, 1).float() / 255)
    assert torch.equal(it["blur"][0], torch.from_numpy(ss[0]["blur"]))
    with pytest.raises(BsrError, match="output"):
        BSRDataset(r2, "train", output="half")


def test_worker_count_does_not_change_batches(tmp_path):
    ss = _samples(n=6)
    _, r2 = _both(tmp_path, ss)
    ds = BSRDataset(r2, "train", crop=16, hflip=True, output="uint8", seed=1)
    got = []
    for nw in (0, 2):
        dl = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=nw, collate_fn=collate)
        got.append([to_float(b) for b in dl])
    for x, y in zip(*got):
        for k in ("lr", "hr", "blur", "seg"):
            assert torch.equal(x[k], y[k])


def test_trainer_makes_float_batches_from_uint8_items(tmp_path):
    """The engine's tasks hand out uint8 items; the trainer's device copy turns them into the float batch
    the float items give (so training sees the same numbers)."""
    from bsrdata.models.engine.task import get_task
    from bsrdata.models.engine.trainer import _to_device

    ss = _samples(n=4)
    _, r2 = _both(tmp_path, ss)
    task = get_task("rrdb-sft")
    cfg = task.config({"data": {"root": str(r2), "crop": 16, "hflip": False, "rot90": False}})
    cfg["train"]["seed"] = 3
    ds = task.make_dataset(cfg, "train", True)
    assert ds.output == "uint8"
    ref = BSRDataset(r2, "train", crop=16, seed=3)
    got = _to_device(task.collate([ds[i] for i in range(4)]), torch.device("cpu"))
    want = collate([ref[i] for i in range(4)])
    for k in ("lr", "hr", "blur", "seg", "invariant"):
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
