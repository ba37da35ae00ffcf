"""The training loop shared by every task (``bsr train``).

``train(task, cfg, data_root, out_dir, resume=True)`` with ``cfg`` the full config from ``task.config``.
Adam (``train.lr``, ``train.betas``), linear warm-up then cosine decay to ``train.min_lr`` (or constant),
float16 autocast + GradScaler on CUDA (``train.amp``), optional grad-norm clipping. One DataLoader
streams batches over epochs from a deterministic sampler (permutation seeded by seed and epoch; each DDP
rank takes every world-th index), so a resumed run sees exactly the batches the uninterrupted run would
have seen. DDP: launched by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK from the environment), NCCL on
CUDA, gloo on CPU; ``train.batch_size`` is the global batch. Only rank 0 writes.

Run folder: ``config.json`` (the resolved config), ``log.csv`` (iteration, lr, loss and its parts,
seconds per iteration), ``val.csv`` (iteration, group, metrics), ``last/`` (a checkpoint:
``model.safetensors`` + ``config.json`` + ``state.pt`` with optimiser/scaler state and the iteration,
replaced atomically every ``train.ckpt_every`` iterations and at the end), ``metrics.json`` (the final
validation and its scoring conventions, ``Task.conventions``), ``pretrained.json`` (which backbone tensors
an ImageNet weights file provided, if one was given).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import time

import torch
from torch.utils.data import Dataset, Sampler

from bsrdata.errors import BsrError
from bsrdata.fileio import replace_dir, write_json_atomic
from bsrdata.loader import RingLoader, batch_bytes
from bsrdata.lock import folder_lock
from bsrdata.models import checkpoint

LAST = "last"
STATE = "state.pt"


# ------------------------------------------------------------------------------------------ distributed
class Dist:
    """Process-group facts: ``rank``, ``world``, ``local_rank``, ``device``, ``owns_group``."""

    def __init__(self, device=None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device not in (None, "", "auto"):
            from bsrdata.models.device import pick_device

            self.device = pick_device(device, option="--device")  # one BsrError line for a bad name
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank if self.world > 1 else torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        self.owns_group = False
        if self.world > 1:
            import torch.distributed as dist

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo", init_method="env://")
                self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


# ------------------------------------------------------------------------------------------ schedule
def lr_at(it: int, t: dict) -> float:
    """Learning rate for iteration ``it`` (0-based): linear warm-up to ``lr``, then ``schedule``:
    ``cosine`` to ``min_lr`` over the run, ``constant``, ``multistep`` (× ``gamma`` at each of ``milestones``,
    the official schedules of MANet, DAN, DCLS and KOALAnet) or ``cosine_restart`` (cosine to ``min_lr``
    restarting every ``restart_period`` iterations, MANet stage 2)."""
    lr, warm, total = float(t["lr"]), int(t["warmup"]), int(t["iterations"])
    if warm and it < warm:
        return lr * (it + 1) / warm
    sched = t["schedule"]
    if sched == "constant":
        return lr
    if sched == "multistep":
        k = sum(1 for m in t.get("milestones") or () if it >= int(m))
        return lr * float(t.get("gamma", 0.5)) ** k
    span = max(1, total - warm)
    pos = it - warm
    if sched == "cosine_restart" and int(t.get("restart_period") or 0) > 0:
        span = int(t["restart_period"])
        pos = pos % span
    p = min(1.0, pos / span)
    return float(t["min_lr"]) + 0.5 * (lr - float(t["min_lr"])) * (1.0 + math.cos(math.pi * p))


# ------------------------------------------------------------------------------------------ data
class _EpochIndexed(Dataset):
    """Items addressed by (epoch, index) so workers know the epoch of each item."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, ei):
        epoch, i = ei
        if hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(epoch)
        return self.ds[i]

    def item_nbytes(self) -> int:
        from bsrdata.loader import item_nbytes

        return item_nbytes(self.ds)


class StreamSampler(Sampler):
    """Endless batches of (epoch, index) for one rank, starting at batch ``start`` of the whole stream."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        self.n, self.batch, self.seed, self.rank, self.world, self.start = n, batch, seed, rank, world, start
        per_rank = -(-n // world)
        self.per_epoch = per_rank // batch
        if self.per_epoch < 1:
            raise BsrError(f"train.batch_size: the training split has {n} samples, fewer than one batch of "
                           f"{batch} per process")

    def epoch_indices(self, epoch: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        total = -(-self.n // self.world) * self.world
        perm = (perm * -(-total // self.n))[:total]  # pad by wrapping so every rank gets as many
        return perm[self.rank::self.world]

    def __iter__(self):
        b = self.start
        while True:
            epoch, k = divmod(b, self.per_epoch)
            idx = self.epoch_indices(epoch)
            for j in range(k, self.per_epoch):
                yield [(epoch, i) for i in idx[j * self.batch:(j + 1) * self.batch]]
            b = (epoch + 1) * self.per_epoch

    def __len__(self):  # nominal
        return 1 << 62


def _to_device(batch, device):
    """Move a batch to ``device``; uint8 items (``BSRDataset(output="uint8")``) become float there."""
    from bsrdata.dataset import to_float

    return to_float(batch, device, non_blocking=True)


# ------------------------------------------------------------------------------------------ run folder
def _save_last(out_dir, model, cfg, optimizer, scaler, iteration):
    final = os.path.join(out_dir, LAST)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.save(tmp, model, cfg)
    torch.save({"iteration": int(iteration), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()},
               os.path.join(tmp, STATE))
    replace_dir(tmp, final)


def _comparable(cfg):
    return {"task": cfg.get("task"), "model": {k: v for k, v in cfg["model"].items() if k not in checkpoint.INIT_ONLY}}


def _write_json(path, obj):
    write_json_atomic(path, obj, indent=2, sort_keys=True, default=float)


class _CSV:
    def __init__(self, path, fields):
        new = not os.path.exists(path)
        self.f = open(path, "a", newline="", encoding="utf-8")
        self.w = csv.DictWriter(self.f, fieldnames=fields, extrasaction="ignore")
        if new:
            self.w.writeheader()

    def row(self, d):
        self.w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in d.items()})
        self.f.flush()

    def close(self):
        self.f.close()


# ------------------------------------------------------------------------------------------ main loop
def _val_plan(cfg):
    """(split, groups) validation will score, or None; BsrError for groups the dataset lacks."""
    d, t = cfg["data"], cfg["train"]
    split = d.get("val_split")
    if not split:
        return None
    from bsrdata.manifest import load_manifest

    m = load_manifest(d["root"])
    if split not in m.splits:
        return None
    if split != "test" or not m.groups:
        return split, None
    groups = [int(g) for g in t["val_groups"]]
    missing = [g for g in groups if str(g) not in m.groups]
    if missing:
        raise BsrError(f"train.val_groups: {missing} not in {d['root']} (has {', '.join(sorted(m.groups))})")
    return split, groups


def _validate(task, model, cfg, dist):
    plan = _val_plan(cfg)
    if plan is None:
        return None
    net = getattr(model, "module", model)
    return task.evaluate(net, cfg["data"]["root"], cfg, plan[1], split=plan[0],
                         limit=int(cfg["train"]["val_limit"] or 0))


def train(task, cfg: dict, data_root, out_dir, resume: bool = True, *, progress: bool = True, device=None,
          stop_after: int = 0, time_limit: float = 0.0):
    """Train ``task``'s model as configured; returns ``{"iterations", "checkpoint", "val", "model"}``
    (``model``: the trained network of this process, unwrapped from DDP).

    ``stop_after`` (iterations) / ``time_limit`` (seconds): end this call early (a checkpoint is written and
    validation runs; the schedule still assumes ``train.iterations``, so ``--resume`` continues exactly).

    ``resume``: continue from ``out_dir/last`` if it exists (its model section must equal ``cfg``'s);
    with ``resume=False`` an existing checkpoint there is an error (nothing is overwritten).

    Before anything is written: ``device`` goes through :func:`bsrdata.models.device.pick_device`,
    ``task.resolve(cfg)`` reads the files the config names, and the run folder is checked (a foreign
    ``config.json`` or ``last/``, unreadable ``last/`` files: one BsrError line naming the file).
    """
    cfg = json.loads(json.dumps(cfg))  # plain JSON types, private copy
    cfg["data"]["root"] = os.path.abspath(os.fspath(data_root))
    out_dir = os.path.abspath(os.fspath(out_dir))
    t = cfg["train"]
    last = os.path.join(out_dir, LAST)
    dist = Dist(device)  # --device checked before anything is read or written
    threads = torch.get_num_threads()  # train.threads holds for this run only, not for what follows
    try:
        cfg = task.resolve(cfg)
        # one writer per run folder (rank 0 writes it; docs/pipeline.md, "Guarantees")
        with folder_lock(out_dir, "train") if dist.main else contextlib.nullcontext():
            start, state = _check_run_folder(out_dir, cfg, resume)
            if t["threads"]:
                torch.set_num_threads(int(t["threads"]))
            return _train(task, cfg, out_dir, last, start, dist, progress, stop_after, time_limit, state)
    finally:
        torch.set_num_threads(threads)
        dist.close()


def _read_state(last) -> dict:
    """``last/state.pt`` checked: a dict with ``iteration`` (int >= 1), ``optimizer`` and ``scaler`` dicts."""
    path = os.path.join(last, STATE)
    if not os.path.isfile(path):
        raise BsrError(f"{path}: missing (the checkpoint in {last} is not a training checkpoint of bsr train)")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BsrError(f"{path}: unreadable ({first[:200]})") from None
    if not isinstance(st, dict) or not all(k in st for k in ("iteration", "optimizer", "scaler")):
        raise BsrError(f"{path}: not a bsr train state (needs iteration, optimizer, scaler)")
    it = st["iteration"]
    if not isinstance(it, int) or isinstance(it, bool) or it < 1:
        raise BsrError(f"{path}: iteration must be a positive integer, got {it!r}")
    if not isinstance(st["optimizer"], dict) or not isinstance(st["scaler"], dict):
        raise BsrError(f"{path}: optimizer / scaler state is not a mapping")
    return st


def _check_run_folder(out_dir, cfg, resume):
    """What ``out_dir`` holds, checked before anything is written -> ``(start iteration, state or None)``.

    A folder ``last/`` without ``config.json``, a ``config.json`` that is not a run of this task, unreadable
    checkpoint files, or a checkpoint of another model are one BsrError line naming the file."""
    last = os.path.join(out_dir, LAST)
    top = os.path.join(out_dir, "config.json")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise BsrError(f"{out_dir}: exists and is not a folder (--out)")
    if os.path.isfile(top):
        try:
            with open(top, encoding="utf-8") as f:
                run_cfg = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BsrError(f"{top}: not a run config of bsr train ({type(exc).__name__}); "
                           "choose another --out") from None
        if not isinstance(run_cfg, dict) or "train" not in run_cfg or "model" not in run_cfg:
            raise BsrError(f"{top}: not a run config of bsr train; choose another --out")
        if run_cfg.get("task") != cfg.get("task"):
            raise BsrError(f"{top}: is a run of task {run_cfg.get('task')!r}, this run trains {cfg.get('task')!r}; "
                           "choose another --out")
    if not os.path.lexists(last):
        return 0, None
    if not os.path.isdir(last) or not os.path.isfile(os.path.join(last, checkpoint.CONFIG)):
        raise BsrError(f"{last}: not a checkpoint of bsr train (no {checkpoint.CONFIG}); choose another --out")
    if not resume:
        raise BsrError(f"{out_dir}: already holds a run (last/); pass --resume to continue it or choose "
                       f"another --out")
    old = checkpoint.read_config(last)
    if _comparable(old) != _comparable(cfg):
        raise BsrError(f"{last}: checkpoint is {_comparable(old)}, the config asks for {_comparable(cfg)}")
    if not os.path.isfile(os.path.join(last, checkpoint.WEIGHTS)):
        raise BsrError(f"{os.path.join(last, checkpoint.WEIGHTS)}: missing")
    st = _read_state(last)
    return st["iteration"], st


def _train(task, cfg, out_dir, last, start, dist, progress, stop_after=0, time_limit=0.0, state=None):
    t = cfg["train"]
    if t["batch_size"] % dist.world:
        raise BsrError(f"train.batch_size: {t['batch_size']} does not split over {dist.world} processes")
    per_rank = t["batch_size"] // dist.world
    dataset = task.make_dataset(cfg, cfg["data"].get("train_split", "train"), True)
    task.check_data(cfg, dataset)
    _val_plan(cfg)
    torch.manual_seed(int(t["seed"]))
    model = task.create_model(cfg).to(dist.device)
    if start:
        checkpoint.load_state(model, last)  # before anything is written: a foreign last/ fails here
    else:
        task.init_from_data(model, dataset, cfg)  # same data on every rank -> same initial weights
    report = getattr(model, "pretrained_report", None)
    if report is not None and dist.main:
        os.makedirs(out_dir, exist_ok=True)
        _write_json(os.path.join(out_dir, "pretrained.json"), report)
    if dist.world > 1 and dist.device.type == "cuda" and t["sync_bn"]:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.train()
    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    groups = task.param_groups(model, cfg)
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.Adam([{k: v for k, v in g.items() if k != "lr_scale"} for g in groups], lr=float(t["lr"]),
                           betas=tuple(t["betas"]), weight_decay=float(t["weight_decay"]))
    scales = [float(g.get("lr_scale", 1.0)) for g in groups]
    use_amp = bool(t["amp"]) and dist.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if start:
        try:
            opt.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BsrError(f"{os.path.join(last, STATE)}: optimizer state does not fit the model "
                           f"({first[:200]})") from None
    sampler = StreamSampler(len(dataset), per_rank, int(t["seed"]), dist.rank, dist.world, start)
    workers = int(t["workers"])
    indexed = _EpochIndexed(dataset)
    loader = RingLoader(indexed, batch_sampler=sampler, num_workers=workers, collate_fn=task.collate,
                        pin_memory=dist.device.type == "cuda", persistent_workers=False,
                        prefetch_factor=2 if workers else None,
                        slot_bytes=batch_bytes(indexed, per_rank) if workers else None)
    total = int(t["iterations"])
    end = min(total, start + int(stop_after)) if stop_after else total
    if start >= end:
        return {"iterations": start, "checkpoint": last, "val": None, "model": model}
    log = val_log = bar = None
    if dist.main:
        os.makedirs(out_dir, exist_ok=True)
        _write_json(os.path.join(out_dir, "config.json"), cfg)
        if progress and start < total:
            from tqdm import tqdm

            bar = tqdm(total=end, initial=start, desc=f"train {task.name}", unit="it", dynamic_ncols=True)
    val_rows = None
    it = start
    tic = time.perf_counter()
    try:
        stream = iter(loader)
        while it < end:
            lr = lr_at(it, t)
            for g, sc in zip(opt.param_groups, scales):
                g["lr"] = lr * sc
            batch = _to_device(next(stream), dist.device)
            with torch.autocast(device_type=dist.device.type, dtype=torch.float16, enabled=use_amp):
                loss, parts = task.training_step(net, batch, cfg)
            if not torch.isfinite(loss.detach()):
                raise BsrError(f"train: loss is {float(loss)} at iteration {it + 1}; lower train.lr or check the data")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if t["grad_clip"]:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, float(t["grad_clip"]))
            scaler.step(opt)
            scaler.update()
            it += 1
            if time_limit and time.perf_counter() - tic > time_limit:
                end = it  # same decision on every rank is not guaranteed: only single-process runs use it
            if dist.main:
                if bar is not None:
                    bar.update(1)
                if it % int(t["log_every"]) == 0 or it == end:
                    now = time.perf_counter()
                    row = {"iteration": it, "lr": lr, "loss": float(loss.detach()), **parts,
                           "sec_per_it": (now - tic) / max(1, it - start)}
                    if log is None:
                        log = _CSV(os.path.join(out_dir, "log.csv"), list(row))
                    log.row(row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.4g}")
            if it % int(t["ckpt_every"]) == 0 or it == end:
                if dist.main:
                    _save_last(out_dir, model, cfg, opt, scaler, it)
                dist.barrier()
            if (t["val_every"] and it % int(t["val_every"]) == 0) or it == end:
                if dist.main:
                    val_rows = _validate(task, model, cfg, dist)
                    if val_rows:
                        fields = ["iteration", "group"] + sorted({k for r in val_rows.values() for k in r})
                        if val_log is None:
                            val_log = _CSV(os.path.join(out_dir, "val.csv"), fields)
                        for gname, r in val_rows.items():
                            val_log.row({"iteration": it, "group": gname, **r})
                dist.barrier()
        if dist.main:
            conv = task.conventions(cfg) if val_rows else {}
            _write_json(os.path.join(out_dir, "metrics.json"), {"iteration": it, "val": val_rows, "conventions": conv})
    finally:
        for x in (log, val_log, bar):
            if x is not None:
                x.close()
        del loader
    return {"iterations": it, "checkpoint": last, "val": val_rows, "model": model}
