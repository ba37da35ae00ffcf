"""A torch ``DataLoader`` whose workers hand batches over through one reused shared-memory ring.

With ``num_workers > 0`` torch's DataLoader collates each batch in a worker into a *fresh* shared-memory
segment, sends its file descriptor and the main process maps it anew: every byte of every batch is
page-faulted twice (zero-filled in the worker, mapped again in the main process), which for 480×640
training items costs more than decoding them (docs/pipeline.md, "Reading benchmark").

:class:`RingLoader` is a drop-in ``DataLoader`` that instead allocates, before the workers fork, one
anonymous shared mapping cut into ``slots`` batch slots. A worker claims a free slot, stacks its items
straight into it and sends only (slot, layout); the main process wraps the slot's bytes as tensors
(no copy) and frees the slot when the last tensor viewing it is gone. Nothing else changes: the same
sampler, order, workers, ``pin_memory`` and ``collate_fn`` semantics, the same batch values.

When a batch cannot use the ring it goes the ordinary torch way, so nothing can block: no free slot (the
caller still holds older batches), a batch larger than a slot, leaves that are not tensors, numbers or
strings, ``num_workers=0``, or a start method other than ``fork`` (spawned workers do not inherit the
mapping). ``loader.ring_stats()`` counts ring and fallback batches.

Slots hold ``slot_bytes`` each (default: ``batch_size`` × the bytes of item 0, from the dataset's
``item_nbytes()`` when it has one, else by reading item 0 once in the main process). The default ``slots`` is
``num_workers × prefetch_factor + 2`` (the batches torch keeps in flight, plus the caller's current and
previous one); e.g. 6 slots of 20 MB for 480×640 uint8 items, batch 8, 2 workers. Linux only (other systems:
plain DataLoader).
"""

from __future__ import annotations

import itertools
import mmap
import multiprocessing
import os
import weakref

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

ALIGN = 64
FREE, HELD = 0, -1  # slot states; a positive state is the pid of the worker writing the slot
_RINGS = weakref.WeakValueDictionary()  # ring id -> BatchRing (forked workers inherit it)
_ids = itertools.count()


def _align(n: int) -> int:
    return -(-int(n) // ALIGN) * ALIGN


class BatchRing:
    """``slots`` × ``slot_bytes`` of anonymous shared memory plus one int64 state per slot.

    State ``0`` free, ``pid > 0`` claimed by that worker (written, in flight), ``-1`` held by the main
    process (tensors alive). Claims take a fork-shared lock; frees are single writes by the owner.
    """

    def __init__(self, slots: int, slot_bytes: int):
        self.slots, self.slot_bytes = int(slots), _align(slot_bytes)
        # MAP_POPULATE: the pages exist from the start, so no batch pays for first touches
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        self.buf = mmap.mmap(-1, self.slots * self.slot_bytes, flags=flags)
        self._state_buf = mmap.mmap(-1, 8 * self.slots)
        self.state = np.frombuffer(self._state_buf, np.int64)
        self.lock = multiprocessing.get_context("fork").Lock()
        self.id = (os.getpid(), next(_ids))
        self.held = 0  # main process: slots whose tensors are alive
        self.delivered = self.plain = 0  # main process: batches through the ring / the ordinary way
        _RINGS[self.id] = self

    def claim(self):
        """A free slot for this process, or None (none free, or the lock not had within 1 s)."""
        if not self.lock.acquire(timeout=1.0):
            return None
        try:
            free = np.flatnonzero(self.state == FREE)
            if not len(free):
                return None
            s = int(free[0])
            self.state[s] = os.getpid()
            return s
        finally:
            self.lock.release()

    def release(self, slot: int) -> None:
        self.state[slot] = FREE

    def view(self, slot: int) -> np.ndarray:
        """uint8 (slot_bytes,) over the slot's bytes (writable)."""
        return np.frombuffer(self.buf, np.uint8, self.slot_bytes, slot * self.slot_bytes)

    def reclaim_dead(self) -> int:
        """Free slots claimed by workers that no longer exist (killed mid-batch); returns how many."""
        n = 0
        with self.lock:
            for s in np.flatnonzero(self.state > 0):
                pid = int(self.state[s])
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    self.state[s] = FREE
                    n += 1
                except PermissionError:
                    pass
        return n

    def close(self) -> None:
        _RINGS.pop(self.id, None)


class _Leaf:
    """Where a tensor of the batch sits in its slot."""

    __slots__ = ("offset", "dtype", "shape")

    def __init__(self, offset, dtype, shape):
        self.offset, self.dtype, self.shape = offset, dtype, shape

    def __reduce__(self):
        return _Leaf, (self.offset, self.dtype, self.shape)


class RingBatch:
    """What a worker sends: the ring id, the slot and the batch with ``_Leaf`` in place of tensors.

    Unpickling it (in the main process) gives back the batch itself, tensors viewing the slot.
    """

    def __init__(self, ring_id, slot, skeleton):
        self.ring_id, self.slot, self.skeleton = ring_id, slot, skeleton

    def __reduce__(self):
        return _rebuild, (self.ring_id, self.slot, self.skeleton)


def _rebuild(ring_id, slot, skeleton):
    ring = _RINGS.get(ring_id)
    if ring is None:
        raise RuntimeError(f"bsrdata.loader: batch ring {ring_id} is not mapped in process {os.getpid()}")
    ring.state[slot] = HELD
    ring.held += 1
    ring.delivered += 1
    raw = ring.view(slot)
    weakref.finalize(raw, _on_free, ring, slot)  # every tensor below keeps `raw` alive
    return _fill(skeleton, raw)


def _fill(node, raw):
    """The skeleton with each ``_Leaf`` replaced by a tensor over its bytes of ``raw`` (no closure: a
    self-referencing one would keep ``raw`` alive until the cyclic garbage collector runs)."""
    if isinstance(node, _Leaf):
        n = _leaf_bytes(node.dtype, node.shape)
        if not n:
            return torch.empty(node.shape, dtype=node.dtype)
        return torch.from_numpy(raw[node.offset:node.offset + n]).view(node.dtype).view(node.shape)
    if isinstance(node, dict):
        return {k: _fill(v, raw) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, raw) for v in node]
    if isinstance(node, tuple):
        return tuple(_fill(v, raw) for v in node)
    return node


def _on_free(ring, slot):
    ring.held -= 1
    ring.release(slot)


def _leaf_bytes(dtype, shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


class _Packer:
    """Lays the batch's tensors out in a slot; ``None`` from :meth:`pack` when it does not fit."""

    def __init__(self, raw: np.ndarray):
        self.raw, self.used = raw, 0

    def place(self, dtype, shape):
        n = _leaf_bytes(dtype, shape)
        off = self.used
        if off + n > len(self.raw):
            raise _NoFit
        self.used = _align(off + n)
        out = torch.from_numpy(self.raw[off:off + n]).view(dtype).view(shape) if n else torch.empty(shape, dtype=dtype)
        return _Leaf(off, dtype, tuple(shape)), out


class _NoFit(Exception):
    pass


def _stack_into(items, packer):
    """default_collate of ``items`` written into the slot; returns the skeleton (``_NoFit`` if not possible)."""
    first = items[0]
    if torch.is_tensor(first):
        if any(not torch.is_tensor(x) or x.shape != first.shape or x.dtype != first.dtype for x in items):
            raise _NoFit
        leaf, out = packer.place(first.dtype, (len(items),) + tuple(first.shape))
        if not _split_planes(items, out):
            torch.stack(items, out=out)
        return leaf
    if isinstance(first, np.ndarray) and first.dtype != object:
        return _stack_into([torch.from_numpy(np.asarray(x)) for x in items], packer)
    if isinstance(first, dict):
        if any(not isinstance(x, dict) or x.keys() != first.keys() for x in items):
            raise _NoFit
        return {k: _stack_into([x[k] for x in items], packer) for k in first}
    if isinstance(first, (str, bytes)):
        return list(items)
    if isinstance(first, (bool, int, float, np.number, np.bool_)):
        return _copy_into(default_collate(list(items)), packer)
    raise _NoFit


def _split_planes(items, out) -> bool:
    """Stack (C, H, W) views of interleaved (H, W, C) images (what ``BSRDataset`` items are) into ``out``
    with OpenCV's de-interleave, ~8x faster than ``torch.stack``'s strided copy; False if not such views."""
    first = items[0]
    if first.dim() != 3 or first.dtype not in (torch.uint8, torch.float32) or not 1 < first.shape[0] <= 4:
        return False
    c, h, w = first.shape
    if any(x.stride() != (1, w * c, c) or x.device.type != "cpu" for x in items):
        return False
    planes = out.numpy()
    for i, x in enumerate(items):
        hwc = x.permute(1, 2, 0).numpy()  # contiguous (H, W, C)
        cv2.split(hwc, [planes[i, k] for k in range(c)])
    return True


def _copy_into(batch, packer):
    """A collated batch (nested dict / list / tuple of tensors and plain values) copied into the slot."""
    if torch.is_tensor(batch):
        leaf, out = packer.place(batch.dtype, tuple(batch.shape))
        out.copy_(batch)
        return leaf
    if isinstance(batch, dict):
        return {k: _copy_into(v, packer) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        vals = [_copy_into(v, packer) for v in batch]
        return vals if isinstance(batch, list) else tuple(vals)
    if batch is None or isinstance(batch, (str, bytes, bool, int, float)):
        return batch
    raise _NoFit


class _RingDataset(Dataset):
    """Wraps the user's dataset: in a forked worker, ``__getitems__`` returns a :class:`RingBatch`."""

    def __init__(self, dataset, ring, collate_fn):
        self.dataset, self.ring, self.user_collate = dataset, ring, collate_fn

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i]

    def __getstate__(self):  # spawned workers: no ring, plain batches
        d = dict(self.__dict__)
        d["ring"] = None
        return d

    def __getitems__(self, indices):
        if hasattr(self.dataset, "__getitems__"):
            items = self.dataset.__getitems__(indices)
        else:
            items = [self.dataset[i] for i in indices]
        ring = self.ring
        if ring is None or torch.utils.data.get_worker_info() is None:
            return _Plain(ring, self._collate(items))
        slot = ring.claim()
        if slot is None:
            return _Plain(ring, self._collate(items))
        try:
            packer = _Packer(ring.view(slot))
            keys = getattr(self.user_collate, "ring_keys", None)
            if self.user_collate is None:
                skel = _stack_into(items, packer)
            elif keys is not None and all(isinstance(x, dict) for x in items):
                skel = _stack_into([{k: x[k] for k in keys} for x in items], packer)
            else:
                skel = _copy_into(self.user_collate(items), packer)
        except _NoFit:
            ring.release(slot)
            return _Plain(ring, self._collate(items))
        except BaseException:
            ring.release(slot)
            raise
        return RingBatch(ring.id, slot, skel)

    def _collate(self, items):
        return (self.user_collate or default_collate)(items)


class _Plain:
    """A batch that goes the ordinary torch way; unpickled in the main process it is the batch itself."""

    def __init__(self, ring, batch):
        self.ring_id, self.batch = (ring.id if ring is not None else None), batch

    def __reduce__(self):
        return _plain, (self.ring_id, self.batch)


def _plain(ring_id, batch):
    ring = _RINGS.get(ring_id) if ring_id is not None else None
    if ring is not None:
        ring.plain += 1
    return batch


def _as_is(batch):
    """The loader's collate_fn: the wrapped dataset has collated already (in the worker)."""
    return batch


class RingLoader(DataLoader):
    """``DataLoader(dataset, ...)`` with the batch ring (module docstring). Extra keyword arguments:
    ``slots`` (int or None), ``slot_bytes`` (int or None), ``ring`` (False: a plain DataLoader)."""

    def __init__(self, dataset, batch_size=1, *, slots=None, slot_bytes=None, ring=True, collate_fn=None,
                 **kwargs):
        workers = int(kwargs.get("num_workers", 0))
        ctx = kwargs.get("multiprocessing_context")
        method = ctx if isinstance(ctx, str) else (ctx.get_start_method() if ctx is not None
                                                   else multiprocessing.get_start_method(allow_none=True)
                                                   or multiprocessing.get_context().get_start_method())
        self._ring = None
        use = bool(ring) and workers > 0 and method == "fork" and hasattr(os, "fork")
        self._user_collate = collate_fn
        if not use:
            super().__init__(dataset, batch_size, collate_fn=collate_fn, **kwargs)
            return
        if slot_bytes is None:
            per_batch = batch_size
            if kwargs.get("batch_sampler") is not None:
                per_batch = getattr(kwargs["batch_sampler"], "batch_size", None)
            if per_batch is None:
                raise ValueError("RingLoader: give slot_bytes when the batch sampler has no batch_size")
            slot_bytes = batch_bytes(dataset, per_batch)
        prefetch = kwargs.get("prefetch_factor") or 2
        if slots is None:  # the batches in flight, plus the caller's current and previous one
            slots = workers * prefetch + 2
        self._ring = BatchRing(slots, slot_bytes)
        wrapped = _RingDataset(dataset, self._ring, collate_fn)
        super().__init__(wrapped, batch_size, collate_fn=_as_is, **kwargs)

    def __iter__(self):
        if self._ring is not None and not self.persistent_workers:
            self._ring.reclaim_dead()
        return super().__iter__()

    def ring_stats(self) -> dict:
        """``{"slots", "slot_bytes", "held", "delivered", "plain"}`` of the ring (main-process counts:
        batches held now, batches received through the ring, batches received the ordinary way), or ``{}``
        for a loader without a ring."""
        r = self._ring
        return {} if r is None else {"slots": r.slots, "slot_bytes": r.slot_bytes, "held": r.held,
                                     "delivered": r.delivered, "plain": r.plain}


def _nbytes(obj) -> int:
    if torch.is_tensor(obj):
        return _align(obj.numel() * obj.element_size())
    if isinstance(obj, np.ndarray):
        return _align(obj.nbytes)
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 8


def item_nbytes(dataset) -> int:
    """Bytes of one item's tensors: ``dataset.item_nbytes()`` if it has one, else of ``dataset[0]`` (read
    once, in this process)."""
    fn = getattr(dataset, "item_nbytes", None)
    return int(fn()) if callable(fn) else _nbytes(dataset[0])


def batch_bytes(dataset, batch: int) -> int:
    """Slot size for batches of ``batch`` items (:func:`item_nbytes` × ``batch``, plus alignment)."""
    return item_nbytes(dataset) * int(batch) + 64 * ALIGN
