"""Train within a wall-clock budget: time a few iterations, then train for what the budget leaves."""

from __future__ import annotations

import csv
import json
import os
import time

from bsrdata.models.engine.trainer import train

CALIBRATION_ITERATIONS = 6
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
        spi = float(list(csv.DictReader(f))[-1]["sec_per_it"])
    left = budget_s - (time.perf_counter() - t0)
    cfg["train"]["iterations"] = max(10, int(left * BUDGET_SHARE / spi))
    cfg["train"]["val_every"] = 0
    cfg["train"]["ckpt_every"] = max(50, cfg["train"]["iterations"] // 4)
    cfg["data"]["val_split"] = None
    run = os.path.join(out, "run")
    res = train(task, cfg, data, run, resume=True, progress=progress, time_limit=max(1.0, left))
    return res, spi, time.perf_counter() - t0, os.path.join(run, "last")
