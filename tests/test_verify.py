"""verify: a good build passes; a flipped byte, a missing shard, a truncated file, a part, bad data fail."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest

from bsrdata.build import build_dataset
from bsrdata.degrade import DegradeConfig
from bsrdata.errors import BsrError
from bsrdata.preview import make_panel
from bsrdata.sources.synthetic import SyntheticSource
from bsrdata.verify import verify_dataset

CFG = DegradeConfig(renderer="gather")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("v") / "ds"
    build_dataset(SyntheticSource(n_train=5, n_test=6, size=(32, 48), seed=1), root, CFG, seed=2, shard_size=4,
                  with_depth=True)
    return root


@pytest.fixture
def ds(built, tmp_path):
    d = tmp_path / "ds"
    shutil.copytree(built, d)
    return d


def _shard(ds, i=0):
    m = json.load(open(ds / "manifest.json"))
    return ds / m["splits"]["test"]["shards"][i]["path"]


def test_good_build_passes(ds):
    r = verify_dataset(ds, full=True)
    assert r["problems"] == [] and r["shards"] == 2 + 3 and r["samples"] == 5 + 11


def test_flipped_byte_caught_by_full(ds):
    p = _shard(ds)
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b))
    probs = verify_dataset(ds, full=True)["problems"]
    assert any("sha256" in x and p.name in x for x in probs)


def test_missing_and_truncated(ds):
    p0, p1 = _shard(ds, 0), _shard(ds, 1)
    os.remove(p0)
    data = p1.read_bytes()
    p1.write_bytes(data[: len(data) // 2])
    probs = verify_dataset(ds)["problems"]
    assert any(p0.name in x and "missing" in x for x in probs)
    assert any(p1.name in x and "truncated" in x for x in probs)


@pytest.fixture(scope="module")
def built_v1(tmp_path_factory):
    root = tmp_path_factory.mktemp("v1") / "ds"
    build_dataset(SyntheticSource(n_train=1, n_test=6, size=(32, 48), seed=1), root, CFG, seed=2, shard_size=4,
                  shard_format=1)
    return root


def test_format_recorded(built, built_v1):
    """The default build writes shard format 2 (recorded in the manifest's and every shard's attrs);
    shard_format=1 writes the first format, and verify passes both."""
    import hdf5plugin  # noqa: F401  (the Blosc filter of format 2)

    for root, fmt in ((built, 2), (built_v1, 1)):
        m = json.load(open(root / "manifest.json"))
        assert m["attrs"].get("shard_format", 1) == fmt
        with h5py.File(root / m["splits"]["test"]["shards"][0]["path"], "r") as f:
            assert f.attrs.get("shard_format", 1) == fmt
            assert f["blur"].dtype == (np.uint16 if fmt == 2 else np.float32)
            assert ("blur_levels" in f) == (fmt == 2)
        assert verify_dataset(root, full=True)["problems"] == []


@pytest.mark.parametrize("fmt", [1, 2])
def test_bad_content_caught(fmt, built, built_v1, tmp_path):
    import hdf5plugin  # noqa: F401

    ds = tmp_path / "ds"
    shutil.copytree(built if fmt == 2 else built_v1, ds)
    m = json.load(open(ds / "manifest.json"))
    sh = m["splits"]["test"]["shards"][0]
    inv = sh["invariant"].index(True) if True in sh["invariant"] else None
    p = ds / sh["path"]
    with h5py.File(p, "r+") as f:
        b = f["blur"][0]
        if fmt == 1:
            b[0, 0] = 7.5  # σ above σ_max = 5
        else:  # format 2: a table entry above σ_max, used by one pixel; a code past the table
            lv = np.append(f["blur_levels"][()], np.float32(7.5))
            del f["blur_levels"]
            f.create_dataset("blur_levels", data=lv)
            b[0, 0] = len(lv) - 1
            b2 = f["blur"][2]
            b2[1, 1] = 60000
            f["blur"][2] = b2
        f["blur"][0] = b
        s = f["seg"][1]
        s[0, 0] = 40  # label outside 0..7 and not 255
        f["seg"][1] = s
        if inv is not None:
            b = f["blur"][inv]
            b[3, 3] += 5 if fmt == 2 else 0.5
            f["blur"][inv] = b
    sz = os.path.getsize(p)
    for s in m["splits"]["test"]["shards"]:
        if s["path"] == sh["path"]:
            s["bytes"] = sz
    json.dump(m, open(ds / "manifest.json", "w"))
    probs = verify_dataset(ds)["problems"]
    assert any("outside [0, 5.0]" in x for x in probs)
    assert any("labels outside" in x for x in probs)
    if inv is not None:
        assert any("not constant" in x for x in probs)
    if fmt == 2:
        assert any("sample 2 blur code 60000 is past the" in x for x in probs)


def test_manifest_problems(ds, tmp_path):
    m = json.load(open(ds / "manifest.json"))
    m["groups"]["2"] = m["groups"]["2"][:-1]
    m["splits"]["train"]["count"] += 1
    json.dump(m, open(ds / "manifest.json", "w"))
    probs = verify_dataset(ds)["problems"]
    assert any("group 2" in x for x in probs) and any("'train'" in x for x in probs)
    os.remove(ds / "manifest.json")
    assert "missing" in verify_dataset(ds)["problems"][0]
    part = tmp_path / "part"
    build_dataset(SyntheticSource(n_train=5, n_test=6, size=(32, 48), seed=1), part, CFG, seed=2, shard_size=4,
                  shard="1/2")
    assert "bsr merge" in verify_dataset(part)["problems"][0]


def test_preview_panel(built, tmp_path):
    from PIL import Image

    out = tmp_path / "p.png"
    make_panel(built, out, split="test", group=2, n=3)
    im = np.asarray(Image.open(out).convert("RGB"))
    assert im.shape[0] > 3 * 32 and im.shape[1] > 5 * 48
    assert len(np.unique(im.reshape(-1, 3), axis=0)) > 50


@pytest.mark.parametrize("kw, msg", [({"split": "train", "group": 1}, "--group: test groups belong to the test split"),
                                     ({"split": "test", "start": -1}, "--start: must be >= 0")])
def test_preview_refuses_a_group_of_another_split_and_negative_start(built, tmp_path, kw, msg):
    out = tmp_path / "p.png"
    with pytest.raises(BsrError, match=msg):
        make_panel(built, out, **kw)
    assert not out.exists()
