"""Benchmark: one training step of CMOS (stage 1), RRDB-SFT (stage 2) and the blind chain (stage 3) at the
paper's sizes, with the data loader in the loop and without it; says which bounds the step, and projects
the wall time of each public training schedule.

Sizes (the public configs, docs/cmos.md and docs/sr.md): CMOS batch 8 at LR 120×160 (HR 480×640 maps);
RRDB-SFT batch 16 of 48×48 LR / 192×192 HR crops; blind (CMOS frozen + RRDB-SFT) batch 4 of whole frames.
The networks are built through the public constructors (``bsrdata.models.registry.create_model``) and the
loss through the tasks' ``training_step`` (``bsrdata.models.engine.task.get_task``); Adam, as in training.

- without the loader: one fixed batch on the device (the network's own speed);
- with the loader: batches from ``BSRDataset(output="uint8")`` over NYUv2-size shards (format 2, the
  samples of ``perf/loader.py``) with a DataLoader of ``--workers`` processes, ``pin_memory`` on CUDA,
  ``to_float`` on the device; the step is bound by the loader when it is clearly slower than without.

On CUDA: autocast (bf16 where supported, else fp16 + GradScaler), channels_last, ``--compile`` for
``torch.compile``; peak memory is ``torch.cuda.max_memory_allocated``. On the CPU: float32, the process's
peak RSS. Schedules (iterations, from the public configs): stage 1 CMOS NYUv2 70k, Cityscapes 260k;
stage 2 RRDB-SFT NYUv2 240k; stage 3 blind NYUv2 40k.

    python perf/train.py                         # CPU: all three, 2 timed steps each
    python perf/train.py --device cuda --steps 20 --compile
    python perf/train.py --only cmos --width 0.25 --steps 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".numba_cache"))

SCHEDULES = {  # (stage, public schedule) -> iterations
    "cmos": [("stage 1 CMOS NYUv2-BSR", 70000), ("stage 1 CMOS Cityscapes-BSR", 260000)],
    "rrdb_sft": [("stage 2 RRDB-SFT NYUv2-BSR", 240000)],
    "blind": [("stage 3 blind NYUv2-BSR", 40000)],
}
SR_KW = {"nf": 64, "nb": 10, "gc": 32, "prior_ch": 64, "sft_hidden": 32, "gia_groups": 8}


def _spec(name, width, nb):
    """(task name, model factory, batch size, BSRDataset crop, fixed-batch shapes)."""
    from bsrdata.models.registry import create_model

    sr_kw = dict(SR_KW, nb=nb)
    if name == "cmos":
        return ("cmos", lambda: create_model("cmos", num_classes=40, width=width), 8, (480, 640), (120, 160))
    if name == "rrdb_sft":
        return ("rrdb-sft", lambda: create_model("rrdb_sft", num_classes=40, **sr_kw), 16, 192, (48, 48))
    if name == "blind":
        return ("blind", lambda: create_model("blind_sr", num_classes=40, cmos="cmos", sr="rrdb_sft",
                                              cmos_kw={"width": width}, sr_kw=sr_kw), 4, None, (120, 160))
    raise SystemExit(f"unknown network {name}")


def fixed_batch(batch, lr_hw, device, num_classes=40, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    h, w = lr_hw
    out = {"lr": torch.rand(batch, 3, h, w, generator=g), "hr": torch.rand(batch, 3, 4 * h, 4 * w, generator=g),
           "blur": torch.rand(batch, 1, 4 * h, 4 * w, generator=g) * 5,
           "seg": torch.randint(0, num_classes, (batch, 4 * h, 4 * w), generator=g)}
    return {k: v.to(device) for k, v in out.items()}


class Stepper:
    """One optimiser step of ``task`` on ``model`` (autocast / GradScaler on CUDA)."""

    def __init__(self, task, model, device, compile_=False):
        import torch

        self.torch = torch
        self.task, self.device = task, device
        self.cfg = task.default_config()
        self.cfg["train"]["seed"] = 0
        model = model.to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile_ else model
        self.model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=1e-5)
        cuda = device.type == "cuda"
        self.dtype = (torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and self.dtype == torch.float16)

    def __call__(self, batch):
        torch = self.torch
        if self.device.type == "cuda":
            for k in ("lr", "hr", "blur"):
                if k in batch:
                    batch[k] = batch[k].contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            res = self.task.training_step(self.model, batch, self.cfg)
        loss = res[0] if isinstance(res, tuple) else res
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(loss.detach())


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, batches, device, steps, warmup):
    for _ in range(warmup):
        step(next(batches))
    _sync(device)
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        step(next(batches))
        _sync(device)
        ts.append(time.perf_counter() - t)
    return ts


def _loader_batches(root, crop, batch, workers, device, seed=0):
    import torch

    from bsrdata.dataset import BSRDataset, collate, to_float
    from bsrdata.loader import RingLoader

    ds = BSRDataset(root, "train", crop=crop, hflip=True, output="uint8", seed=seed)
    dl = RingLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                    pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0,
                    generator=torch.Generator().manual_seed(seed))

    def gen():
        while True:
            for b in dl:
                yield to_float(b, device, non_blocking=True)
    return gen()


def _peak_mb(device):
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--only", default="cmos,rrdb_sft,blind", help="Networks to time (comma separated).")
    ap.add_argument("--steps", type=int, default=2, help="Timed steps per measurement (default 2).")
    ap.add_argument("--warmup", type=int, default=1, help="Untimed steps first (default 1).")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the loader run.")
    ap.add_argument("--items", type=int, default=64, help="Items in the NYUv2-size dataset for the loader run.")
    ap.add_argument("--width", type=float, default=1.0, help="CMOS channel multiplier (1.0 = published).")
    ap.add_argument("--nb", type=int, default=10, help="RRDB blocks (10 = published).")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA).")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import torch

    from bsrdata.fileio import write_json_atomic
    from bsrdata.models.device import pick_device
    from bsrdata.models.engine.task import get_task

    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    res = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "load_before": os.getloadavg(), "nets": {}}
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)
    print(f"device {device}" + (f" ({res['gpu']})" if "gpu" in res else f", {res['threads']} torch threads, "
                                f"load {res['load_before'][0]:.1f} on {res['cpus']} CPUs"), flush=True)
    work = tempfile.mkdtemp(prefix="bsr_train_")
    try:
        import loader as perf_loader

        root = perf_loader.write_both(work, perf_loader.make_samples(), a.items)[2]["root"]
        for name in [x.strip() for x in a.only.split(",") if x.strip()]:
            task_name, factory, batch, crop, lr_hw = _spec(name, a.width, a.nb)
            task = get_task(task_name)
            torch.manual_seed(0)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            step = Stepper(task, factory(), device, a.compile)
            fb = fixed_batch(batch, lr_hw, device)

            def fixed(fb=fb):
                while True:
                    yield dict(fb)
            t_net = time_steps(step, fixed(), device, a.steps, a.warmup)
            peak = _peak_mb(device)
            print(f"{name}: without the loader {sorted(t_net)[len(t_net) // 2]:.3f} s/it, peak {peak:.0f} MB",
                  flush=True)
            batches = _loader_batches(root, crop, batch, a.workers, device)
            t_load = time_steps(step, batches, device, a.steps, a.warmup)
            t0 = time.perf_counter()  # the loader alone: batches/s with no step in between
            nb_ = max(2, a.steps)
            for _ in range(nb_):
                next(batches)
            _sync(device)
            t_only = (time.perf_counter() - t0) / nb_
            del batches
            med = sorted(t_net)[len(t_net) // 2]
            med_l = sorted(t_load)[len(t_load) // 2]
            bound = "loader" if t_only > 0.5 * med and med_l > 1.2 * med else "network"
            r = {"batch": batch, "lr_size": list(lr_hw), "step_s_no_loader": t_net, "step_s_with_loader": t_load,
                 "loader_only_s_per_batch": t_only, "it_per_s": 1 / med, "samples_per_s": batch / med,
                 "it_per_s_with_loader": 1 / med_l, "peak_mb": peak, "bound_by": bound,
                 "projected_h": {s: n * med_l / 3600 for s, n in SCHEDULES[name]}}
            res["nets"][name] = r
            print(f"{name}: batch {batch}, LR {lr_hw[0]}x{lr_hw[1]}: {med:.3f} s/it without the loader "
                  f"({1 / med:.3f} it/s, {batch / med:.1f} samples/s), {med_l:.3f} s/it with it; loader alone "
                  f"{t_only:.3f} s/batch -> bound by the {bound}; peak {peak:.0f} MB", flush=True)
            for s, h in r["projected_h"].items():
                print(f"  {s}: {SCHEDULES[name][[x[0] for x in SCHEDULES[name]].index(s)][1]} it -> "
                      f"{h:.1f} h ({h / 24:.1f} days)", flush=True)
            del step, fb
            if a.json:  # after each network, so a long CPU run leaves what it measured
                write_json_atomic(a.json, res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["load_after"] = os.getloadavg()
    if a.json:
        write_json_atomic(a.json, res)
    return res


if __name__ == "__main__":
    main()
