"""HDF5 shard contract, atomic writes, manifest, open_dataset and its validation."""

import json
import os

import h5py
import numpy as np
import pytest

import bsrdata
from bsrdata.degrade import DegradeConfig
from bsrdata.errors import BsrError
from bsrdata.manifest import read_manifest, sha256_file
from bsrdata.shards import ShardWriter, read_sample, read_shard_meta, write_dataset, write_shard


def _sample(key, inv=False, h=8, w=12, seed=0, seg=True):
    r = np.random.default_rng(seed)
    return {"key": key, "hr": (r.random((h, w, 3)) * 255).astype(np.uint8),
            "lr": (r.random((h // 4, w // 4, 3)) * 255).astype(np.uint8),
            "blur": np.full((h, w), 1.25, np.float32) if inv else (r.random((h, w)) * 5).astype(np.float32),
            "seg": r.integers(0, 5, (h, w)).astype(np.uint8) if seg else None,
            "depth": (1 + r.random((h, w))).astype(np.float32), "invariant": inv,
            "params": {"focus_m": 1.5, "seed": seed}}


ATTRS = dict(DegradeConfig().to_attrs(), num_classes=5)


def test_contract(tmp_path):
    """Shard format 1 (gzip, one sample per chunk) is still written byte for byte as before."""
    p = tmp_path / "s" / "a.h5"
    ss = [_sample("k0", seed=0), _sample("k1", True, seed=1), _sample("k2", seed=2, seg=False)]
    write_shard(p, ss, ATTRS, with_depth=True, shard_format=1)
    assert os.listdir(p.parent) == ["a.h5"]  # no temporary file left
    with h5py.File(p, "r") as f:
        assert f["hr"].shape == (3, 8, 12, 3) and f["hr"].dtype == np.uint8
        assert f["lr"].shape == (3, 2, 3, 3) and f["lr"].dtype == np.uint8
        assert f["blur"].dtype == np.float32 and f["seg"].dtype == np.uint8 and f["depth"].dtype == np.float32
        assert f["hr"].chunks == (1, 8, 12, 3) and f["blur"].chunks == (1, 8, 12)
        assert f["hr"].compression == "gzip" and f["blur"].compression == "gzip"
        assert [k.decode() for k in f["key"][()]] == ["k0", "k1", "k2"]
        assert f["invariant"][()].tolist() == [False, True, False]
        assert json.loads(f["params"][1])["seed"] == 1
        for k in ("scale", "max_coc", "sigma_max", "renderer", "downsample", "noise", "generator_version"):
            assert k in f.attrs
        assert "shard_format" not in f.attrs and "blur_levels" not in f  # format 1 = absent attribute
        assert np.all(f["seg"][2] == 255)  # an unlabelled sample in a labelled shard is all ignore
    s = read_sample(p, 1)
    for k in ("hr", "lr", "blur", "seg", "depth"):
        assert np.array_equal(s[k], ss[1][k])
    assert s["key"] == "k1" and s["invariant"] is True and s["params"] == ss[1]["params"]
    meta = read_shard_meta(p)
    assert meta["n"] == 3 and meta["shape"] == (8, 12) and meta["with_depth"]


def test_bytes_are_reproducible(tmp_path):
    ss = [_sample("k0"), _sample("k1", True, seed=3)]
    write_shard(tmp_path / "a.h5", ss, ATTRS)
    write_shard(tmp_path / "b.h5", ss, ATTRS)
    assert sha256_file(tmp_path / "a.h5") == sha256_file(tmp_path / "b.h5")


def test_failed_write_leaves_nothing(tmp_path):
    p = tmp_path / "a.h5"
    with pytest.raises(RuntimeError):
        with ShardWriter(p, 3, ATTRS, with_seg=True) as w:
            w.add(_sample("k0"))
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    with pytest.raises(BsrError, match="differs"):
        write_shard(p, [_sample("k0"), _sample("k1", h=12)], ATTRS)
    assert os.listdir(tmp_path) == []
    with pytest.raises(BsrError, match="1 of 2"):
        with ShardWriter(p, 2, ATTRS, with_seg=True) as w:
            w.add(_sample("k0"))
    assert os.listdir(tmp_path) == []


def _dataset(tmp_path):
    root = tmp_path / "ds"
    samples = [_sample("a"), _sample("a", True, seed=1), _sample("b", seed=2), _sample("b", True, seed=3)]
    m = write_dataset(root, {"test": samples}, attrs=ATTRS, shard_size=3,
                      groups={"1": [("a", True), ("b", False)], "2": [("a", False), ("b", True)]})
    # the writer cut the split into shards of 3 and pointed each member at its stored rendering
    assert [(sh.path, sh.keys, sh.invariant) for sh in m.splits["test"].shards] == [
        ("test/test-00000.h5", ("a", "a", "b"), (False, True, False)), ("test/test-00001.h5", ("b",), (True,))]
    assert [(e.shard, e.index) for e in m.groups["1"]] == [("test/test-00000.h5", 1), ("test/test-00000.h5", 2)]
    assert [(e.shard, e.index) for e in m.groups["2"]] == [("test/test-00000.h5", 0), ("test/test-00001.h5", 0)]
    for sh in m.splits["test"].shards:
        assert sh.sha256 == sha256_file(root / sh.path) and sh.bytes == os.path.getsize(root / sh.path)
    return root


def test_open_dataset(tmp_path):
    root = _dataset(tmp_path)
    v = bsrdata.open_dataset(root, "test")
    assert len(v) == 4 and v.keys == ["a", "a", "b", "b"] and v.attrs["max_coc"] == 21
    g2 = bsrdata.open_dataset(root, "test", group=2)
    assert g2.keys == ["a", "b"] and g2.invariant == [False, True]
    s = g2[1]
    assert s["key"] == "b" and s["invariant"] and np.all(s["blur"] == 1.25)
    assert g2[-1]["key"] == "b" and len(g2[0:2]) == 2
    with pytest.raises(IndexError):
        g2[2]
    with pytest.raises(BsrError, match="no split"):
        bsrdata.open_dataset(root, "train")
    with pytest.raises(BsrError, match="group"):
        bsrdata.open_dataset(root, "test", group=7)


def test_read_validation(tmp_path):
    root = _dataset(tmp_path)
    # a shard whose hr has the wrong dtype, and one without a dataset, are refused with the file named
    p = root / "test" / "test-00001.h5"
    with h5py.File(p, "r+") as f:
        del f["hr"]
        f.create_dataset("hr", data=np.zeros((1, 8, 12, 3), np.float32))
    with pytest.raises(BsrError, match="test-00001.h5: hr must be uint8"):
        bsrdata.open_dataset(root, "test")[3]
    with h5py.File(p, "r+") as f:
        del f["blur"]
    with pytest.raises(BsrError, match="'blur' missing"):
        read_sample(p, 0)
    (root / "test" / "test-00000.h5").write_bytes(b"not hdf5")
    with pytest.raises(BsrError, match="not a readable HDF5"):
        read_sample(root / "test" / "test-00000.h5", 0)
    m = json.loads((root / "manifest.json").read_text())
    m["splits"]["test"]["shards"][0]["path"] = "../../etc/passwd"
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BsrError, match="escapes"):
        read_manifest(root)
    (root / "manifest.json").write_text("{")
    with pytest.raises(BsrError, match="unreadable manifest"):
        read_manifest(root)
    with pytest.raises(BsrError, match="missing"):
        read_manifest(tmp_path)


def test_get_reads_only_the_requested_fields(tmp_path):
    """``DatasetView.get(i, fields)`` returns exactly those fields, equal to the full read."""
    import pytest

    from bsrdata import open_dataset
    from bsrdata.build import build_dataset
    from bsrdata.degrade import DegradeConfig
    from bsrdata.errors import BsrError
    from bsrdata.sources import get_source

    src = get_source("demo", n_train=5, n_test=0, size=(32, 48), middlebury=False)
    build_dataset(src, tmp_path / "d", DegradeConfig(max_coc=9), seed=1, with_depth=True)
    view = open_dataset(tmp_path / "d", "train")
    full = view[2]
    part = view.get(2, ("key", "blur", "invariant"))
    assert set(part) == {"key", "blur", "invariant"}
    assert part["key"] == full["key"] and part["invariant"] == full["invariant"]
    assert (part["blur"] == full["blur"]).all() and full["depth"] is not None
    with pytest.raises(BsrError, match="unknown sample field"):
        view.get(0, ("colour",))
