"""A shard reads only its own bytes, and only what it may: external links, soft links, virtual datasets,
external raw storage, links out of the dataset folder and declared sizes beyond the bounds are refused by
every reader (verify, open_dataset, bench's loader) before any data is read. Each crafted dataset below
has its manifest updated to the crafted shard's size and sha256, as an attacker (or a careless tool)
would, so the refusal comes from the shard checks, not from a size or hash mismatch."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from sr_fakes import make_bench_dataset

from bsrdata import open_dataset
from bsrdata.benchmark import BenchData
from bsrdata.errors import BsrError
from bsrdata.fileio import sha256_file
from bsrdata.verify import verify_dataset

REL = "test/test-00000.h5"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("integ") / "ds"
    make_bench_dataset(root, n_test=5, h=16, w=24)
    return root


@pytest.fixture
def ds(pristine, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    return root


def _reseal(root, rel=REL):
    """Make the manifest agree with the (crafted) shard file's bytes and hash."""
    mp = os.path.join(root, "manifest.json")
    m = json.load(open(mp))
    for s in m["splits"].values():
        for sh in s["shards"]:
            if sh["path"] == rel:
                path = os.path.join(root, rel)
                sh["bytes"], sh["sha256"] = os.path.getsize(path), sha256_file(path)
    json.dump(m, open(mp, "w"))


def _replace_dataset(root, name, make):
    """Rewrite shard REL with dataset ``name`` replaced by ``make(f, name, old_array)``."""
    path = os.path.join(root, REL)
    with h5py.File(path, "r+") as f:
        old = f[name][()]
        del f[name]
        make(f, name, old)
    _reseal(root)


def _all_refuse(root, match):
    problems = verify_dataset(root, full=True)["problems"]
    assert any(match in p for p in problems), problems
    view = open_dataset(root, "test")
    with pytest.raises(BsrError, match=match):
        view[0]
    view.close()
    data = BenchData(root, "1")
    with pytest.raises(BsrError, match=match):
        data.load(next(iter(data.units)))


def test_untouched_dataset_reads(ds):
    assert verify_dataset(ds, full=True)["problems"] == []
    assert open_dataset(ds, "test")[0]["hr"].dtype == np.uint8


def test_external_link_is_refused(ds, tmp_path):
    outside = tmp_path / "outside.h5"

    def make(f, name, old):
        with h5py.File(outside, "w") as g:
            g.create_dataset(name, data=old)
        f[name] = h5py.ExternalLink(str(outside), name)

    _replace_dataset(ds, "blur", make)
    _all_refuse(ds, "'blur' is a ExternalLink")
    # the outside file changing cannot go unnoticed any more: verify --full still refuses
    with h5py.File(outside, "r+") as g:
        g["blur"][0] = 0.0
    assert any("ExternalLink" in p for p in verify_dataset(ds, full=True)["problems"])


def test_soft_link_is_refused(ds):
    def make(f, name, old):
        f.create_dataset("other", data=old)
        f[name] = h5py.SoftLink("/other")

    _replace_dataset(ds, "blur", make)
    _all_refuse(ds, "is a SoftLink")


def test_virtual_dataset_is_refused(ds, tmp_path):
    outside = tmp_path / "v.h5"

    def make(f, name, old):
        with h5py.File(outside, "w") as g:
            g.create_dataset(name, data=old)
        layout = h5py.VirtualLayout(shape=old.shape, dtype=old.dtype)
        layout[...] = h5py.VirtualSource(str(outside), name, shape=old.shape)
        f.create_virtual_dataset(name, layout)

    _replace_dataset(ds, "blur", make)
    _all_refuse(ds, "'blur' is a virtual dataset")


def test_external_raw_storage_is_refused(ds, tmp_path):
    outside = tmp_path / "raw.bin"

    def make(f, name, old):
        outside.write_bytes(np.ascontiguousarray(old).tobytes())
        f.create_dataset(name, shape=old.shape, dtype=old.dtype, external=[(str(outside), 0, old.nbytes)])

    _replace_dataset(ds, "blur", make)
    _all_refuse(ds, "'blur' keeps its data in external files")


def test_shard_linked_out_of_the_dataset_is_refused(ds, tmp_path):
    outside = tmp_path / "elsewhere.h5"
    shutil.move(os.path.join(ds, REL), outside)
    os.symlink(outside, os.path.join(ds, REL))
    _all_refuse(ds, "resolves outside the dataset folder")


def test_declared_size_beyond_the_bound_is_refused_before_reading(ds):
    """A few KB declaring a 10 GB sample: refused from the shape alone (nothing is decompressed)."""
    def make(f, name, old):
        f.create_dataset(name, shape=(old.shape[0], 40000, 30000, 3), dtype=np.uint8, chunks=(1, 64, 64, 3),
                         compression="gzip")

    _replace_dataset(ds, "hr", make)
    assert os.path.getsize(os.path.join(ds, REL)) < 1 << 20
    _all_refuse(ds, "'hr' declares 3600000000 bytes per sample")


def test_chunk_beyond_the_bound_is_refused(ds):
    def make(f, name, old):
        n = old.shape[0]
        f.create_dataset(name, shape=(n, 4000, 16000), dtype=np.float32, chunks=(n, 4000, 16000),
                         compression="gzip")  # each sample within the bound, one chunk holding all of them

    _replace_dataset(ds, "blur", make)
    _all_refuse(ds, "'blur' has chunks")


def test_sample_count_is_checked_against_the_manifest_before_the_keys(ds):
    mp = os.path.join(ds, "manifest.json")
    m = json.load(open(mp))
    sh = m["splits"]["test"]["shards"][0]
    with h5py.File(os.path.join(ds, REL), "r+") as f:
        n = f["hr"].shape[0]
        for name in list(f):
            d = f[name]
            d2 = d[()]
            del f[name]
            f.create_dataset(name, data=d2[: n - 1], chunks=True if d2.ndim > 1 else None)
    _reseal(ds)
    assert sh["count"] == n
    problems = verify_dataset(ds)["problems"]
    assert any(f"{n - 1} samples, manifest says {n}" in p for p in problems), problems
