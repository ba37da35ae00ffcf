"""PNG figures of the benchmark and the CMOS evaluation (matplotlib, the ``figures`` extra; docs/sr.md "Figures").

``bsr bench ... --figures DIR`` (:func:`bench_figures`):

- ``table2_bars.png``: the paper's Table 2 layout as grouped bars (PSNR per test group and Avg, a bar per
  method, SSIM written on the bar);
- ``psnr_vs_sigma.png`` (with ``--strata``): PSNR (Avg over groups) per σ bin of the ground truth, one line
  per method, the spread over the groups (min–max) as a band; the boundary band vs flat beside it;
- ``compare_<uid>.png``: a Fig. 5-style panel: LR (nearest ×s), each method's SR and the HR, the full
  frame on top with the crop outlined, the zoomed crop below (PSNR of the crop in the title). The image is
  the unit where the methods' PSNRs differ most, the crop the window where their SRs differ most
  (mean |ΔY| across methods), unless ``--crop X,Y,W,H`` is given.

``bsr eval cmos ... --figures DIR`` (:func:`eval_figure`): ``cmos_<uid>.png``, the predicted σ map beside
the true one, the error (prediction − truth) with a colour bar, and the predicted segmentation beside the
ground truth.

matplotlib is imported only here, with the Agg backend; :func:`require_matplotlib` turns its absence into
one BsrError line.
"""

from __future__ import annotations

import os

import numpy as np

from bsrdata.errors import BsrError

__all__ = ["require_matplotlib", "parse_crop", "bench_figures", "bars_figure", "sigma_figure",
           "compare_figure", "eval_figure", "pick_crop"]


def require_matplotlib():
    """Import matplotlib with the Agg backend -> ``matplotlib.pyplot``, or one BsrError line."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise BsrError("--figures: needs matplotlib (pip install 'bsrdata[figures]' or "
                       "pip install matplotlib)") from None
    return plt


def parse_crop(text):
    """``"X,Y,W,H"`` (HR px) -> tuple of 4 ints, ``None`` -> None."""
    if text is None or str(text).strip() == "":
        return None
    try:
        vals = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4 or vals[0] < 0 or vals[1] < 0 or vals[2] < 2 or vals[3] < 2:
        raise BsrError(f"--crop: expected X,Y,W,H in HR px (W, H >= 2), got {text!r}")
    return vals


def _save(fig, path):
    from bsrdata.fileio import atomic_open

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return os.fspath(path)


def _colours(n):
    plt = require_matplotlib()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


# ------------------------------------------------------------------------------------------ bars
def bars_figure(rows, group_ids, path, title="SR on the test groups"):
    """Grouped bars: x = Group1..k, Avg; a bar per method (PSNR, dB), SSIM printed on each bar."""
    plt = require_matplotlib()
    cols = [str(g) for g in group_ids] + ["avg"]
    names = [f"Group{g}" for g in group_ids] + ["Avg"]
    n = len(rows)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols) * max(1, n) / 2, 3.6))
    lo = min(r["groups"][c]["psnr"] if c != "avg" else r["avg"]["psnr"] for r in rows for c in cols)
    hi = max(r["groups"][c]["psnr"] if c != "avg" else r["avg"]["psnr"] for r in rows for c in cols)
    base = np.floor(lo - 0.15 * max(hi - lo, 1.0))
    for i, (r, colour) in enumerate(zip(rows, _colours(n))):
        vals = [(r["avg"] if c == "avg" else r["groups"][c]) for c in cols]
        xs = np.arange(len(cols)) + (i - (n - 1) / 2) * width
        ax.bar(xs, [v["psnr"] - base for v in vals], width * 0.95, bottom=base, color=colour, label=r["label"])
        for x, v in zip(xs, vals):
            ax.text(x, v["psnr"] + 0.02 * max(hi - lo, 1.0), f"{v['psnr']:.2f}\n{v['ssim']:.3f}", ha="center",
                    va="bottom", fontsize=6.5)
    ax.set_xticks(np.arange(len(cols)), names)
    ax.set_ylabel("PSNR-Y (dB)  [SSIM below it]")
    ax.set_ylim(base, hi + 0.3 * max(hi - lo, 1.0))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(n, 4), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------ σ bins
def sigma_figure(aggs: dict, group_ids, path, title="PSNR per σ bin of the ground truth"):
    """Left: PSNR (Avg over groups) per σ bin, a line per method, the min–max over groups as a band.
    Right: the same for the strata all / band / flat / iva / va as points with min–max bars."""
    plt = require_matplotlib()
    labels = list(aggs)
    first = aggs[labels[0]]
    bins = [k for k in first if k.startswith("sigma[")]
    other = [k for k in ("all", "band", "flat", "iva", "va") if k in first]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 1.6]})
    gk = [str(g) for g in group_ids]
    for lb, colour in zip(labels, _colours(len(labels))):
        agg = aggs[lb]
        xs, mean, lo, hi = [], [], [], []
        for i, b in enumerate(bins):
            per = agg.get(b, {})
            vals = [per[g]["psnr"] for g in gk if g in per and np.isfinite(per[g]["psnr"])]
            if vals:
                xs.append(i)
                mean.append(per["avg"]["psnr"])
                lo.append(min(vals))
                hi.append(max(vals))
        ax.plot(xs, mean, "o-", color=colour, label=lb)
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, linewidth=0)
        for j, s in enumerate(other):
            per = agg.get(s, {})
            vals = [per[g]["psnr"] for g in gk if g in per]
            if vals:
                off = (labels.index(lb) - (len(labels) - 1) / 2) * 0.18
                bx.errorbar([j + off], [per["avg"]["psnr"]], yerr=[[per["avg"]["psnr"] - min(vals)],
                            [max(vals) - per["avg"]["psnr"]]], fmt="o", color=colour, capsize=3)
    ax.set_xticks(range(len(bins)), [b[5:] for b in bins], fontsize=8)
    ax.set_xlabel("true σ (HR px)")
    ax.set_ylabel("PSNR-Y (dB)")
    ax.set_title(title + " (band: min–max over groups)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    # pixel share of each bin (first method; the same pixels for every method)
    tot = (first.get("all", {}).get("avg") or {}).get("pixels") or 1
    for i, b in enumerate(bins):
        px = (first.get(b, {}).get("avg") or {}).get("pixels")
        if px:
            ax.annotate(f"{100 * px / tot:.0f}%", (i, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                        textcoords="offset points", ha="center", fontsize=7, color="grey")
    bx.set_xticks(range(len(other)), other, fontsize=8)
    bx.set_title("other strata", fontsize=9)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------ panels
def _box_mean(x, h, w):
    """Mean of ``x`` over every h×w window (valid positions) via an integral image -> (H-h+1, W-w+1)."""
    c = np.pad(np.cumsum(np.cumsum(x, 0), 1), ((1, 0), (1, 0)))
    return (c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]) / (h * w)


def pick_crop(srs, size):
    """(x, y, w, h) of the ``size`` window (w, h) where the SR images (list of uint8 RGB) differ most: the
    largest mean over the window of the per-pixel spread (max − min) of their Y across methods."""
    from bsrdata.metrics import rgb_to_y

    ys = np.stack([rgb_to_y(np.asarray(s)) for s in srs])
    spread = ys.max(0) - ys.min(0)
    w, h = size
    h, w = min(h, spread.shape[0]), min(w, spread.shape[1])
    m = _box_mean(spread, h, w)
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    return int(x), int(y), int(w), int(h)


def compare_figure(lr, srs: dict, hr, path, crop=None, scores=None, title=""):
    """Fig. 5-style panel: LR (nearest), each SR, HR; full frames with the crop outlined, zoomed crops
    below. ``srs``: label -> uint8 RGB; ``crop`` (x, y, w, h) HR px or None (:func:`pick_crop`)."""
    plt = require_matplotlib()
    from matplotlib.patches import Rectangle

    from bsrdata.metrics import psnr_y

    hr = np.asarray(hr)
    H, W = hr.shape[:2]
    s = H // np.asarray(lr).shape[0]
    lr_up = np.repeat(np.repeat(np.asarray(lr), s, 0), s, 1)
    if crop is None:
        side = max(16, min(H, W) // 4)
        crop = pick_crop(list(srs.values()), (side, side)) if len(srs) > 1 else (0, 0, min(W, side), min(H, side))
    x, y, w, h = crop
    if x + w > W or y + h > H:
        raise BsrError(f"--crop: {x},{y},{w},{h} is outside the {W}x{H} HR image")
    tiles = [("LR (nearest)", lr_up)] + list(srs.items()) + [("HR", hr)]
    n = len(tiles)
    fig, axes = plt.subplots(2, n, figsize=(2.3 * n, 2.3 * (H / W) + 2.5), squeeze=False,
                             gridspec_kw={"height_ratios": [H / W, 1.0]})
    for j, (name, img) in enumerate(tiles):
        a, b = axes[0, j], axes[1, j]
        a.imshow(img, interpolation="nearest")
        a.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="red", linewidth=1.2))
        head = name
        if name in srs:
            full = (scores or {}).get(name)
            cp = psnr_y(img[y:y + h, x:x + w], hr[y:y + h, x:x + w])
            head = f"{name}\n{full:.2f} dB (crop {cp:.2f})" if full is not None else f"{name}\ncrop {cp:.2f} dB"
        a.set_title(head, fontsize=8)
        b.imshow(img[y:y + h, x:x + w], interpolation="nearest")
        for ax in (a, b):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title + f"  crop x={x} y={y} w={w} h={h}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def bench_figures(data, out_dir, rows, fig_dir, strata=None, crop=None) -> list:
    """Write the bench figures for ``rows`` (``run_bench(...).rows``) into ``fig_dir`` -> their paths.

    The comparison panel needs the SR images of the methods (``OUT/sr/LABEL/<uid>.png``, written by
    ``--save-images``, which ``--figures`` turns on); methods without them are left out of it."""
    from PIL import Image

    from bsrdata.benchmark import _read_jsonl, _safe

    require_matplotlib()
    os.makedirs(fig_dir, exist_ok=True)
    paths = [bars_figure(rows, data.group_ids, os.path.join(fig_dir, "table2_bars.png"))]
    if strata:
        paths.append(sigma_figure(strata, data.group_ids, os.path.join(fig_dir, "psnr_vs_sigma.png")))
    # the unit where the methods' PSNRs differ most, among those every method has an image of
    scores, dirs = {}, {}
    for r in rows:
        d = os.path.join(out_dir, "sr", _safe(r["label"]))
        _, sc = _read_jsonl(os.path.join(out_dir, "results", r["slug"] + ".jsonl"))
        if os.path.isdir(d):
            dirs[r["label"]], scores[r["label"]] = d, sc
    if not dirs:
        return paths
    cand = [u for u in data.units if all(os.path.isfile(os.path.join(d, u + ".png")) for d in dirs.values())]
    if not cand:
        return paths
    uid = max(cand, key=lambda u: (np.ptp([scores[lb][u]["psnr"] for lb in dirs]), not data.units[u].invariant))
    s = data.load(uid)
    srs = {}
    for lb, d in dirs.items():
        with Image.open(os.path.join(d, uid + ".png")) as im:
            srs[lb] = np.asarray(im.convert("RGB"))
    u = data.units[uid]
    paths.append(compare_figure(s["lr"], srs, s["hr"], os.path.join(fig_dir, f"compare_{uid}.png"), crop=crop,
                                scores={lb: scores[lb][uid]["psnr"] for lb in dirs},
                                title=f"{u.key} ({'IVA' if u.invariant else 'VA'})"))
    return paths


# ------------------------------------------------------------------------------------------ eval
def eval_figure(sample: dict, pred_blur, pred_seg, sigma_max: float, path, title="", num_classes=None):
    """Predicted σ | true σ | error (pred − true) with colour bars; predicted segmentation | ground truth."""
    plt = require_matplotlib()
    from bsrdata.preview import seg_image

    gt = np.asarray(sample["blur"], np.float64)
    seg = sample.get("seg")
    has_seg = pred_seg is not None and seg is not None
    ncol = 3 + (2 if has_seg else 0)
    H, W = gt.shape
    fig, axes = plt.subplots(1, ncol, figsize=(3.1 * ncol, 3.1 * H / W + 0.9), squeeze=False)
    axes = axes[0]
    err = None
    if pred_blur is not None:
        pred = np.asarray(pred_blur, np.float64)
        if pred.shape != gt.shape:
            raise BsrError(f"figure: predicted σ map {pred.shape} is not the HR size {gt.shape}")
        err = pred - gt
        im = axes[0].imshow(pred, cmap="viridis", vmin=0, vmax=sigma_max)
        axes[0].set_title(f"predicted σ (MAE {np.mean(np.abs(err)):.3f} px)", fontsize=8)
        fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.02, label="σ (HR px)")
    im = axes[1].imshow(gt, cmap="viridis", vmin=0, vmax=sigma_max)
    axes[1].set_title("true σ", fontsize=8)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02, label="σ (HR px)")
    if err is not None:
        lim = max(float(np.max(np.abs(err))), 1e-6)
        im = axes[2].imshow(err, cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[2].set_title("error: predicted − true", fontsize=8)
        fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02, label="Δσ (px)")
    if has_seg:
        axes[3].imshow(np.asarray(seg_image(np.asarray(pred_seg, np.uint8)).convert("RGB")), interpolation="nearest")
        axes[3].set_title("predicted segmentation", fontsize=8)
        axes[4].imshow(np.asarray(seg_image(np.asarray(seg, np.uint8)).convert("RGB")), interpolation="nearest")
        axes[4].set_title("ground truth (black: ignore)", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
