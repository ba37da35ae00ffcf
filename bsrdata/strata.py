"""Stratified scores: where a method wins or loses (numpy only; docs/sr.md "Stratified scores").

The paper's argument (Sec. 1, Tables 4–8) is that semantics help blur estimation *at blur boundaries* and
that space-variant training matters. One PSNR per group cannot show that, so ``bsr bench --strata`` and
``bsr eval cmos --strata`` also score each image inside **strata** of its pixels, all defined from the
ground-truth σ map (HR pixels) of the test rendering:

- ``sigma[a,b)``: pixels whose true σ lies in the bin (default edges 0, 1, 2, …, ⌈σ_max⌉; the last bin
  also holds σ = its upper edge);
- ``band``: pixels near a blur discontinuity, i.e. where the σ range (max − min) in the
  ``(2r+1) × (2r+1)`` window around the pixel, r = ``band_width // 2``, exceeds ``band_threshold`` σ px;
  a σ step gets a band about ``band_width`` px wide. ``flat`` is the rest;
- ``all``: every pixel (the pixel-pooled counterpart of the harness's per-image mean);
- ``iva`` / ``va``: every pixel of the space-invariant / space-variant renderings of the group.

**Per-pixel errors, pooled per group.** For each unit (a distinct stored rendering,
:class:`bsrdata.benchmark.BenchData`) and stratum the harness keeps the pixel count, the sum of squared
errors, the sum of absolute errors and the sum of the SSIM map over the stratum's pixels (the valid SSIM map
of :mod:`bsrdata.metrics`; a map pixel belongs to the stratum of its window's centre). A group's stratum
score pools its images: PSNR = 10·log10(peak² / (Σ sq. err / Σ n)), SSIM = Σ SSIM / Σ n, MAE = Σ |err| / Σ n.
A stratum is pooled because a small stratum of one image (a few boundary pixels) would otherwise weigh
as much as a whole image. ``Avg`` is the mean of the groups that have the stratum (as the harness's Avg).

SR (bench): Y channel, peak 255, the harness's border crop (the masks are cropped with the image).
Blur maps (eval): σ / σ_max, peak 1, prediction unclipped (as :func:`bsrdata.metrics.blur_psnr`); the MAE
is reported in σ px (HR).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.metrics import _filter_valid, _gauss_1d, crop_border, rgb_to_y

__all__ = ["StrataSpec", "default_edges", "parse_edges", "masks", "unit_stats", "sr_unit_stats",
           "blur_unit_stats", "aggregate", "strata_names", "ssim_map", "strata_markdown", "compare_markdown",
           "DEFAULT_BAND_WIDTH", "DEFAULT_BAND_THRESHOLD"]

DEFAULT_BAND_WIDTH = 8  # HR px
DEFAULT_BAND_THRESHOLD = 0.5  # σ px (HR)
_WIN = 11
_FIELDS = ("n", "sse", "sae", "ssim", "ssim_n")


def default_edges(sigma_max: float) -> tuple:
    """0, 1, 2, …, ⌈σ_max⌉ (at least two edges)."""
    top = max(1, int(math.ceil(float(sigma_max) - 1e-9)))
    return tuple(float(x) for x in range(top + 1))


def parse_edges(text, sigma_max: float, option: str = "--strata-bins") -> tuple:
    """``None``/``""`` -> :func:`default_edges`; ``"0,1,2,5"`` -> those edges (increasing, >= 2);
    a single number ``"0.5"`` -> edges 0, 0.5, 1, … up to ≥ σ_max."""
    if text is None or str(text).strip() == "":
        return default_edges(sigma_max)
    try:
        vals = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise BsrError(f"{option}: cannot read {text!r} (use edges like 0,1,2,5 or one bin width like 0.5)") from None
    if len(vals) == 1:
        step = vals[0]
        if not step > 0:
            raise BsrError(f"{option}: bin width must be > 0, got {text!r}")
        n = max(1, int(math.ceil(float(sigma_max) / step - 1e-9)))
        return tuple(round(i * step, 9) for i in range(n + 1))
    if any(not math.isfinite(v) for v in vals) or any(b <= a for a, b in zip(vals, vals[1:])):
        raise BsrError(f"{option}: edges must be finite and increasing, got {text!r}")
    return tuple(vals)


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclasses.dataclass(frozen=True)
class StrataSpec:
    """Which strata to score: σ bin ``edges`` (HR px), ``band_width`` (HR px) and ``band_threshold`` (σ px)."""

    edges: tuple
    band_width: int = DEFAULT_BAND_WIDTH
    band_threshold: float = DEFAULT_BAND_THRESHOLD

    def __post_init__(self):
        if len(self.edges) < 2:
            raise BsrError("--strata-bins: need at least two edges")
        if int(self.band_width) < 1:
            raise BsrError(f"--band-width: must be >= 1 px, got {self.band_width}")
        if not float(self.band_threshold) >= 0:
            raise BsrError(f"--band-threshold: must be >= 0, got {self.band_threshold}")

    @classmethod
    def make(cls, sigma_max, bins=None, band_width=DEFAULT_BAND_WIDTH, band_threshold=DEFAULT_BAND_THRESHOLD):
        return cls(parse_edges(bins, sigma_max), int(band_width), float(band_threshold))

    def bin_names(self) -> list:
        return [f"sigma[{_fmt(a)},{_fmt(b)}{']' if i == len(self.edges) - 2 else ')'}"
                for i, (a, b) in enumerate(zip(self.edges, self.edges[1:]))]

    def to_dict(self) -> dict:
        return {"edges": [float(e) for e in self.edges], "band_width": int(self.band_width),
                "band_threshold": float(self.band_threshold),
                "band_rule": "sigma range (max - min) in a (2r+1)^2 window, r = band_width // 2, > band_threshold",
                "pooling": "per group: pixel-pooled MSE -> PSNR, mean SSIM-map and |err| over the stratum's pixels"}

    def key(self) -> str:
        """Short hash naming this spec (stored with each unit's strata so another spec is rescored)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def strata_names(spec: StrataSpec) -> list:
    """Table order: all, iva, va, the σ bins, band, flat."""
    return ["all", "iva", "va"] + spec.bin_names() + ["band", "flat"]


def masks(sigma, spec: StrataSpec) -> dict:
    """Boolean (H, W) masks of the pixel strata of a ground-truth σ map: ``all``, each σ bin, ``band``, ``flat``."""
    from scipy.ndimage import maximum_filter, minimum_filter

    s = np.squeeze(np.asarray(sigma, dtype=np.float64))
    if s.ndim != 2:
        raise BsrError(f"strata: the σ map must be 2-D, got shape {np.shape(sigma)}")
    out = {"all": np.ones(s.shape, bool)}
    e = spec.edges
    for i, name in enumerate(spec.bin_names()):
        hi = s <= e[i + 1] if i == len(e) - 2 else s < e[i + 1]
        out[name] = (s >= e[i]) & hi
    size = 2 * (int(spec.band_width) // 2) + 1
    rng = maximum_filter(s, size=size, mode="nearest") - minimum_filter(s, size=size, mode="nearest")
    out["band"] = rng > float(spec.band_threshold)
    out["flat"] = ~out["band"]
    return out


def ssim_map(a, b, peak: float) -> np.ndarray:
    """The valid SSIM map (H-10, W-10) of :func:`bsrdata.metrics.ssim` (its mean is that function's value)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or min(a.shape) < _WIN:
        raise BsrError(f"ssim map: need two equal 2-D arrays of at least {_WIN}x{_WIN}, got {a.shape}, {b.shape}")
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    w = _gauss_1d()
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    s_aa = _filter_valid(a * a, w) - mu_a * mu_a
    s_bb = _filter_valid(b * b, w) - mu_b * mu_b
    s_ab = _filter_valid(a * b, w) - mu_a * mu_b
    return ((2.0 * mu_a * mu_b + c1) * (2.0 * s_ab + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (s_aa + s_bb + c2))


def unit_stats(pred, gt, sigma, spec: StrataSpec, peak: float, crop: int = 0, err_scale: float = 1.0) -> dict:
    """Per-stratum sums of one image pair (float (H, W) arrays) -> ``{stratum: [n, sse, sae, ssim_sum, ssim_n]}``.

    The masks come from ``sigma`` (ground truth, same (H, W)); ``crop`` px are removed per side from the
    images and the masks; ``sae`` is Σ|pred − gt|·``err_scale`` (σ px for σ/σ_max maps)."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    sig = np.squeeze(np.asarray(sigma, dtype=np.float64))
    if pred.shape != gt.shape or gt.shape != sig.shape:
        raise BsrError(f"strata: shapes differ: prediction {pred.shape}, ground truth {gt.shape}, σ map {sig.shape}")
    m = masks(sig, spec)
    p, g = crop_border(pred, crop), crop_border(gt, crop)
    err = p - g
    se, ae = err * err, np.abs(err) * float(err_scale)
    smap = ssim_map(p, g, peak)
    r = (_WIN - 1) // 2
    out = {}
    for name, mk in m.items():
        mk = crop_border(mk, crop)
        ms = mk[r:-r, r:-r]
        out[name] = [int(mk.sum()), float(se[mk].sum()), float(ae[mk].sum()), float(smap[ms].sum()), int(ms.sum())]
    return out


def sr_unit_stats(sr, hr, sigma, spec: StrataSpec, crop: int = 0) -> dict:
    """:func:`unit_stats` of uint8 RGB SR / HR on the Y channel (peak 255)."""
    return unit_stats(rgb_to_y(np.asarray(sr)), rgb_to_y(np.asarray(hr)), sigma, spec, 255.0, crop)


def blur_unit_stats(pred, gt, spec: StrataSpec, sigma_max: float) -> dict:
    """:func:`unit_stats` of σ maps ÷ σ_max (peak 1, prediction unclipped); MAE in σ px."""
    if not sigma_max or sigma_max <= 0:
        raise BsrError(f"sigma_max: must be > 0, got {sigma_max}")
    p = np.squeeze(np.asarray(pred, dtype=np.float64))
    g = np.squeeze(np.asarray(gt, dtype=np.float64))
    return unit_stats(p / sigma_max, g / sigma_max, g, spec, 1.0, 0, err_scale=sigma_max)


def _pool(stats_list, peak: float) -> dict:
    tot = np.zeros(5)
    for st in stats_list:
        tot += np.asarray(st, dtype=np.float64)
    n, sse, sae, ss, sn = tot
    if n == 0:
        return None
    mse = sse / n
    return {"psnr": math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse),
            "ssim": ss / sn if sn else math.nan, "mae": sae / n, "pixels": int(n)}


def aggregate(groups: dict, stats: dict, invariant: dict, spec: StrataSpec, peak: float) -> dict:
    """Per stratum, group and Avg: ``{stratum: {"1": {"psnr", "ssim", "mae", "pixels", "images"}, ...,
    "avg": {...}}}`` from per-unit ``stats`` (:func:`unit_stats`), ``invariant`` (uid -> bool) and the
    group lists ``groups`` (g -> uids). A stratum with no pixel in a group has no entry for that group."""
    out = {}
    for name in strata_names(spec):
        per = {}
        for g, uids in groups.items():
            if name in ("iva", "va"):
                sel = [u for u in uids if bool(invariant[u]) == (name == "iva")]
                lst = [stats[u]["all"] for u in sel]
            else:
                sel = [u for u in uids if stats[u][name][0] > 0]
                lst = [stats[u][name] for u in sel]
            v = _pool(lst, peak)
            if v is not None:
                per[str(g)] = {**v, "images": len(sel)}
        if per:
            vals = list(per.values())
            per["avg"] = {k: float(np.mean([v[k] for v in vals])) for k in ("psnr", "ssim", "mae")}
            per["avg"]["pixels"] = int(sum(v["pixels"] for v in vals))
            per["avg"]["groups"] = len(vals)
        out[name] = per
    return out


# ------------------------------------------------------------------------------------------- tables
def _cell(v, kind):
    if v is None:
        return "–"
    if kind == "blur":
        return f"{v['psnr']:.2f}/{v['ssim']:.4f}/{v['mae']:.3f}"
    return f"{v['psnr']:.2f}/{v['ssim']:.4f}"


def strata_markdown(agg: dict, group_ids, kind: str = "sr") -> str:
    """One method's (or checkpoint's) table: rows = strata, columns Group1..k, Avg, pixel share."""
    from bsrdata.tables import markdown_table

    head = ["Stratum"] + [f"Group{g}" for g in group_ids] + ["Avg", "pixels %"]
    total = (agg.get("all", {}).get("avg") or {}).get("pixels") or 0
    body = []
    for name, per in agg.items():
        cells = [name] + [_cell(per.get(str(g)), kind) for g in group_ids] + [_cell(per.get("avg"), kind)]
        px = (per.get("avg") or {}).get("pixels")
        cells.append(f"{100.0 * px / total:.1f}" if px is not None and total else "–")
        body.append(cells)
    return markdown_table(head, body, align=["---"] + [":---:"] * (len(head) - 1))


def compare_markdown(aggs: dict, kind: str = "sr") -> str:
    """Methods side by side: rows = strata, a column per method with its Avg, and (for two or more methods)
    the gain of each later method over the first in PSNR (dB)."""
    from bsrdata.tables import markdown_table

    labels = list(aggs)
    if not labels:
        return ""
    names = list(next(iter(aggs.values())))
    head = ["Stratum"] + labels + [f"Δ {lb} − {labels[0]} (dB)" for lb in labels[1:]]
    body = []
    for name in names:
        avgs = [aggs[lb].get(name, {}).get("avg") for lb in labels]
        cells = [name] + [_cell(v, kind) for v in avgs]
        for v in avgs[1:]:
            cells.append(f"{v['psnr'] - avgs[0]['psnr']:+.2f}" if v and avgs[0] else "–")
        body.append(cells)
    return markdown_table(head, body, align=["---"] + [":---:"] * (len(head) - 1))


# ------------------------------------------------------------------------------------------- bench
def bench_strata(data, out_dir, rows, spec: StrataSpec) -> dict:
    """label -> :func:`aggregate` for each bench row (``run_bench(...).rows``) whose stored results in
    ``out_dir/results`` carry strata of ``spec`` for every unit; rows without them are left out."""
    import os

    from bsrdata.benchmark import _read_jsonl

    key = spec.key()
    inv = {u: data.units[u].invariant for u in data.units}
    out = {}
    for r in rows:
        _, scores = _read_jsonl(os.path.join(out_dir, "results", r["slug"] + ".jsonl"))
        st = {u: rec["strata"] for u, rec in scores.items() if rec.get("strata_key") == key}
        if all(u in st for u in data.units):
            out[r["label"]] = aggregate(data.groups, st, inv, spec, 255.0)
    return out


def _num(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    return _num(obj)


def write_bench_strata(data, out_dir, rows, spec: StrataSpec, crop_border: int = 0) -> tuple:
    """Write ``strata.md`` and ``strata.json`` in ``out_dir`` for the bench ``rows`` -> (markdown, aggs)."""
    import os

    from bsrdata.fileio import write_json_atomic, write_text_atomic

    aggs = bench_strata(data, out_dir, rows, spec)
    parts = ["## Stratified scores (PSNR/SSIM on Y, Avg over groups)\n", compare_markdown(aggs), ""]
    for label, agg in aggs.items():
        parts += [f"### {label}\n", strata_markdown(agg, data.group_ids), ""]
    parts.append(f"Strata from the ground-truth σ map (HR px): bins {list(spec.edges)}, band = σ range > "
                 f"{spec.band_threshold:g} px in a {2 * (spec.band_width // 2) + 1} px window; pixel-pooled per "
                 f"group; border crop {crop_border} px (docs/sr.md \"Stratified scores\").\n")
    md = "\n".join(parts)
    doc = {"format": "bsrdata-strata/1", "dataset": data.provenance(), "crop_border": int(crop_border),
           "spec": spec.to_dict(), "metric": "Y channel, peak 255",
           "methods": {lb: _clean(a) for lb, a in aggs.items()}}
    write_text_atomic(os.path.join(out_dir, "strata.md"), md)
    write_json_atomic(os.path.join(out_dir, "strata.json"), doc, indent=2)
    return md, aggs


# -------------------------------------------------------------------------------------------- eval
def write_eval_strata(data, groups: dict, stats: dict, spec: StrataSpec, out_dir=None, provenance=None) -> tuple:
    """Blur-map strata of ``bsr eval cmos``: :func:`aggregate` of per-unit :func:`blur_unit_stats` over
    ``groups`` (g -> uids of ``data``, a :class:`bsrdata.benchmark.BenchData`) -> (markdown, agg); with
    ``out_dir`` also ``cmos_strata.md`` and ``cmos_strata.json``."""
    import os

    from bsrdata.fileio import write_json_atomic, write_text_atomic

    inv = {u: data.units[u].invariant for u in data.units}
    agg = aggregate(groups, stats, inv, spec, 1.0)
    gids = list(groups)
    md = "\n".join(["## Stratified blur-map scores (PSNR/SSIM of σ/σ_max, MAE in σ px)\n",
                    strata_markdown(agg, gids, kind="blur"), "",
                    f"Strata from the ground-truth σ map: bins {list(spec.edges)}, band = σ range > "
                    f"{spec.band_threshold:g} px in a {2 * (spec.band_width // 2) + 1} px window; pixel-pooled "
                    "per group (docs/sr.md \"Stratified scores\").", ""])
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_text_atomic(os.path.join(out_dir, "cmos_strata.md"), md)
        write_json_atomic(os.path.join(out_dir, "cmos_strata.json"),
                          {"format": "bsrdata-strata/1", "provenance": provenance or {}, "spec": spec.to_dict(),
                           "metric": "σ/σ_max maps, peak 1, prediction unclipped; mae in σ px",
                           "groups": [str(g) for g in gids], "strata": _clean(agg)}, indent=2)
    return md, agg
