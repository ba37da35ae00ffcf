"""bsrdata.loader.RingLoader: the same batches as torch's DataLoader, delivered through reused shared slots,
and the ordinary way whenever the ring cannot take a batch."""

import gc
import os

import numpy as np
import pytest
import torch
from test_torch_dataset import make_coord_dataset
from torch.utils.data import DataLoader, Dataset

from bsrdata.dataset import COLLATE_KEYS, BSRDataset, collate
from bsrdata.loader import RingLoader, batch_bytes, item_nbytes

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the ring needs fork workers")


class Mixed(Dataset):
    """Items with every kind of leaf: a (3, H, W) view of an (H, W, 3) image (what BSRDataset gives), float
    and int64 tensors, a numpy array, str, bool, int, float and a nested dict."""

    def __init__(self, n=19, h=12, w=10):
        self.n, self.h, self.w = n, h, w

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 256, (self.h, self.w, 3), dtype=np.uint8)
        return {"img": torch.from_numpy(img).permute(2, 0, 1),
                "f": torch.from_numpy(rng.standard_normal((2, self.h, self.w)).astype(np.float32)),
                "lab": torch.from_numpy(rng.integers(0, 9, (self.h, self.w))),
                "arr": rng.standard_normal(5),
                "key": f"item{i}", "flag": i % 3 == 0, "n": i, "x": i / 7.0,
                "sub": {"y": torch.full((4,), float(i))}}


def _equal(a, b):
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _batches(loader):
    return [b for b in loader]


@pytest.mark.parametrize("workers", [1, 2])
def test_same_batches_as_dataloader(workers):
    ds = Mixed()
    kw = dict(batch_size=4, num_workers=workers, shuffle=True)
    ref = _batches(DataLoader(ds, generator=torch.Generator().manual_seed(3), **kw))
    rl = RingLoader(ds, generator=torch.Generator().manual_seed(3), slots=8, **kw)  # room for all 5 kept
    got = _batches(rl)
    assert len(got) == len(ref) == 5  # the last batch has 3 items
    assert all(_equal(r, g) for r, g in zip(ref, got))
    assert all(g["img"].is_contiguous() for g in got)
    st = rl.ring_stats()
    assert st["delivered"] == len(got) and st["plain"] == 0  # every batch came through the ring
    del got, ref
    gc.collect()
    assert rl.ring_stats()["held"] == 0  # the slots are free once the tensors are gone


def test_slots_are_reused_and_freed_without_the_garbage_collector():
    rl = RingLoader(Mixed(n=64), batch_size=2, num_workers=2)
    gc.disable()
    try:
        held = []
        for b in rl:
            held.append(rl.ring_stats()["held"])
            del b
    finally:
        gc.enable()
    st = rl.ring_stats()
    # 6 slots went round 5 times with the cyclic collector off: each batch freed its slot when dropped
    assert st["delivered"] == 32 > 3 * st["slots"] and st["plain"] == 0
    assert max(held) <= 1 + 2 * 2  # the caller's batch + those torch buffers out of order


def test_held_batches_fall_back_and_stay_intact():
    ds = Mixed(n=40)
    ref = _batches(DataLoader(ds, batch_size=2, num_workers=2))
    rl = RingLoader(ds, batch_size=2, num_workers=2, slots=3)
    got = _batches(rl)  # all 20 kept alive: only 3 slots, the rest must go the ordinary way
    st = rl.ring_stats()
    assert st["delivered"] >= 1 and st["plain"] >= 1 and st["delivered"] + st["plain"] == 20
    assert all(_equal(r, g) for r, g in zip(ref, got))  # no slot was overwritten under a held batch


def test_oversize_batches_and_options_fall_back():
    ds = Mixed(n=8)
    ref = _batches(DataLoader(ds, batch_size=4))
    small = RingLoader(ds, batch_size=4, num_workers=2, slot_bytes=256)
    assert all(_equal(r, g) for r, g in zip(ref, _batches(small)))
    assert small.ring_stats()["delivered"] == 0 and small.ring_stats()["plain"] == 2
    for rl in (RingLoader(ds, batch_size=4, num_workers=0), RingLoader(ds, batch_size=4, num_workers=2, ring=False)):
        assert rl.ring_stats() == {}
        assert all(_equal(r, g) for r, g in zip(ref, _batches(rl)))


def test_custom_collate_is_copied_into_the_slot():
    def pairs(items):
        return (torch.stack([it["f"] for it in items]) * 2, [it["key"] for it in items])

    ds = Mixed(n=6)
    ref = _batches(DataLoader(ds, batch_size=3, collate_fn=pairs))
    rl = RingLoader(ds, batch_size=3, num_workers=2, collate_fn=pairs)
    got = _batches(rl)
    assert all(_equal(r, g) for r, g in zip(ref, got)) and rl.ring_stats()["delivered"] == 2


def test_bsr_dataset_with_collate_and_spawn(tmp_path):
    root = make_coord_dataset(str(tmp_path / "d"), n=7)
    for output in ("uint8", "float"):
        ds = BSRDataset(root, "train", crop=16, hflip=True, zoom=(1, 1.5), seed=2, output=output)
        ref = _batches(DataLoader(ds, batch_size=3, collate_fn=collate))
        rl = RingLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
        assert all(_equal(r, g) for r, g in zip(ref, _batches(rl)))
        assert rl.ring_stats()["delivered"] == 3
        assert item_nbytes(ds) * 3 <= batch_bytes(ds, 3) <= rl.ring_stats()["slot_bytes"]
    ds = BSRDataset(root, "train", output="uint8")
    whole = ds[0]
    assert ds.item_nbytes() >= sum(whole[k].numel() * whole[k].element_size() for k in ("lr", "hr", "blur", "seg"))
    spawned = RingLoader(ds, batch_size=3, num_workers=1, collate_fn=collate, multiprocessing_context="spawn")
    assert spawned.ring_stats() == {}  # spawned workers cannot inherit the mapping: a plain DataLoader
    assert all(_equal(r, g) for r, g in zip(_batches(DataLoader(ds, batch_size=3, collate_fn=collate)),
                                            _batches(spawned)))
    assert collate.ring_keys == COLLATE_KEYS


def test_task_collate_keys_match_the_dataset():
    from bsrdata.models.engine.task import Task

    assert Task.collate.ring_keys == COLLATE_KEYS


def test_break_then_iterate_again_reclaims_slots():
    ds = Mixed(n=48)
    rl = RingLoader(ds, batch_size=2, num_workers=2)
    it = iter(rl)
    next(it)  # the workers have claimed slots for their prefetched batches
    del it  # ... and are shut down with those batches unread
    gc.collect()
    ref = _batches(DataLoader(ds, batch_size=2))
    n = 0
    for r, g in zip(ref, rl):  # each batch dropped before the next: all through the ring
        assert _equal(r, g)
        n += 1
        del g
    assert n == 24 and rl.ring_stats()["plain"] == 0 and rl.ring_stats()["held"] == 0


class Failing(Mixed):
    def __getitem__(self, i):
        if i == 5:
            raise ValueError("bad item 5")
        return super().__getitem__(i)


def test_dataset_errors_reach_the_caller():
    rl = RingLoader(Failing(n=12), batch_size=2, num_workers=2)
    with pytest.raises(ValueError, match="bad item 5"):
        _batches(rl)


def test_trainer_with_workers_equals_no_workers(tmp_path):
    from engine_fakes import TinyTask, small_cfg
    from sr_fakes import make_bench_dataset

    from bsrdata.models import checkpoint
    from bsrdata.models.engine.trainer import train

    data = str(tmp_path / "data")
    make_bench_dataset(data, n_test=3, n_train=6, h=32, w=40, num_classes=4)
    task = TinyTask()
    params = {}
    for w in (0, 2):
        run = tmp_path / f"w{w}"
        train(task, small_cfg(task, iterations=4, workers=w, threads=1), data, run, progress=False)
        model, _ = checkpoint.load(str(run / "last"))
        params[w] = model.state_dict()
    assert params[0].keys() == params[2].keys()
    assert all(torch.equal(params[0][k], params[2][k]) for k in params[0])
