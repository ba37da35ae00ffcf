"""Train within a wall-clock budget: time a few iterations, then train for what the budget leaves."""

from __future__ import annotations

import csv
import json
import os
import time

from bsrdata.models.engine.trainer import train

CALIBRATION_ITERATIONS = 8
CALIBRATION_SKIP = 2  # first iterations left out of the timing (allocation, first-call overheads)
BUDGET_SHARE = 0.92  # of the time left after calibration, planned as iterations (the rest is slack)


def train_within(task, cfg, data, out, budget_s, progress=True):
    """Calibrate seconds per iteration on a short run in ``out/calibration``, set ``train.iterations`` so the
    run fits in what is left of ``budget_s`` (seconds, calibration included), then train in ``out/run``
    (no validation: score outside the budget; ``time_limit`` stops it at the budget in any case).

    Returns ``(result of train, seconds per iteration, seconds spent, path of the last checkpoint)``.
    ``cfg`` is updated in place with the planned iterations."""
    t0 = time.perf_counter()
    calib = os.path.join(out, "calibration")
    ccfg = json.loads(json.dumps(cfg))
    ccfg["train"]["iterations"] = CALIBRATION_ITERATIONS
    ccfg["train"]["log_every"] = 1
    ccfg["data"]["val_split"] = None
    train(task, ccfg, data, calib, resume=True, progress=False)
    with open(os.path.join(calib, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    # the log's sec_per_it is a running mean: elapsed(k) = k * sec_per_it(k); time the steady iterations only
    done = [(int(r["iteration"]), int(r["iteration"]) * float(r["sec_per_it"])) for r in rows]
    k0, e0 = done[CALIBRATION_SKIP - 1] if len(done) > CALIBRATION_SKIP else (0, 0.0)
    k1, e1 = done[-1]
    spi = (e1 - e0) / max(1, k1 - k0)
    left = budget_s - (time.perf_counter() - t0)
    cfg["train"]["iterations"] = max(10, int(left * BUDGET_SHARE / spi))
    cfg["train"]["val_every"] = 0
    cfg["train"]["ckpt_every"] = max(50, cfg["train"]["iterations"] // 4)
    cfg["data"]["val_split"] = None
    run = os.path.join(out, "run")
    res = train(task, cfg, data, run, resume=True, progress=progress, time_limit=max(1.0, left))
    return res, spi, time.perf_counter() - t0, os.path.join(run, "last")
