"""The dataset card of a built dataset: ``bsr info DIR`` prints it, ``bsr info DIR --card`` writes it
(``CARD.md`` + ``card_sigma_hist.png``; docs/pipeline.md "Dataset card").

What a dataset release page carries, all read from the dataset itself (the manifest and one pass over the
shards' ``blur``, ``invariant`` and ``params`` arrays, never the images):

- identity: source, recipe id, generator version, seed, limit, SHA-256 of ``manifest.json``;
- counts per split and test group in the layout of the paper's Table 1 (images, stored renderings,
  space-invariant (IVA) and space-variant (VA) ones; per group its members and IVA members);
- the degradation attributes (scale, max CoC, σ_max, renderer, downsampling, noise) and the recipe with its
  deviations as the manifest records them;
- σ statistics per split and rendering kind (pixel mean, median, 95th percentile, max; a histogram over
  [0, σ_max] in the PNG);
- VA rendering statistics from the per-sample parameters: number of depth layers, focus distance (m),
  f-number, focal length (mm), and the IVA σ values;
- sizes on disk per split (shards, bytes) and in total.

:func:`collect` returns the numbers as a dict (JSON-able); :func:`card_markdown` formats them;
:func:`write_card` writes both files atomically.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bsrdata.errors import BsrError

__all__ = ["collect", "card_markdown", "write_card", "sigma_hist_figure"]

N_BINS = 20


def _stats(values) -> dict | None:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    return {"n": int(v.size), "min": float(v.min()), "median": float(np.median(v)), "mean": float(v.mean()),
            "max": float(v.max())}


def collect(root) -> dict:
    """The card's numbers for the dataset at ``root`` (see the module docstring)."""
    from bsrdata.manifest import ABSENT, NAME, load_manifest, read_manifest, sha256_file
    from bsrdata.shards import _open_h5, _sample_from, check_shard, shard_path

    root = os.fspath(root)
    m = load_manifest(root)
    raw = read_manifest(root)
    attrs = dict(m.attrs or {})
    sigma_max = float(attrs.get("sigma_max", (attrs.get("max_coc", 21) - 1) / 4))
    edges = np.linspace(0.0, sigma_max, N_BINS + 1)
    src = m.source if m.source not in (ABSENT, None) else None
    out = {
        "root": os.path.abspath(root),
        "manifest_sha256": sha256_file(os.path.join(root, NAME)),
        "format": raw.get("format"),
        "generator_version": raw.get("generator_version"),
        "source": None if src is None else {"name": src.name, "num_classes": None if src.num_classes is ABSENT
                                            else src.num_classes},
        "seed": raw.get("seed"), "limit": raw.get("limit"), "complete": raw.get("complete"),
        "with_depth": raw.get("with_depth"),
        "invariant_fraction": raw.get("invariant_fraction", "1/5"),
        "attrs": attrs,
        "recipe": raw.get("recipe"),
        "sigma_max": sigma_max,
        "hist_edges": [float(e) for e in edges],
        "splits": {}, "groups": {},
    }
    total_bytes = 0
    for name, sp in m.splits.items():
        hist = {"va": np.zeros(N_BINS, np.int64), "iva": np.zeros(N_BINS, np.int64)}
        px = {"va": [], "iva": []}
        params = {"n_layers": [], "focus_m": [], "f_number": [], "f_mm": [], "sigma_iva": []}
        sizes = set()
        nbytes = 0
        n_inv = 0
        for sh in sp.shards:
            path = shard_path(root, sh.path)
            if not os.path.isfile(path):
                raise BsrError(f"{path}: shard listed in the manifest is missing")
            nbytes += os.path.getsize(path)
            with _open_h5(path) as f:  # both shard formats (format 2's filter registered), checked first
                check_shard(f, path, int(sh.count))
                for i in range(int(sh.count)):
                    s = _sample_from(f, i, path, fields=("blur", "invariant", "params"))
                    kind = "iva" if s["invariant"] else "va"
                    n_inv += kind == "iva"
                    b = np.asarray(s["blur"], np.float64)
                    sizes.add(f"{b.shape[1]}x{b.shape[0]}")
                    hist[kind] += np.histogram(np.clip(b, 0, sigma_max), bins=edges)[0]
                    # a strided sample of the pixels keeps the quantiles cheap on big builds
                    px[kind].append(b.ravel()[:: max(1, b.size // 4096)])
                    p = s["params"] or {}
                    for k in params:
                        if k in p and (k != "n_layers" or kind == "va"):
                            params[k].append(p[k])
        total_bytes += nbytes
        sig = {}
        for kind in ("va", "iva"):
            if px[kind]:
                v = np.concatenate(px[kind])
                sig[kind] = {"mean": float(v.mean()), "median": float(np.median(v)),
                             "p95": float(np.percentile(v, 95)), "max": float(v.max()),
                             "hist": [int(x) for x in hist[kind]]}
        out["splits"][name] = {
            "images": getattr(sp, "images", None) if getattr(sp, "images", ABSENT) is not ABSENT else None,
            "renderings": int(sp.count), "invariant": n_inv, "variant": int(sp.count) - n_inv,
            "shards": len(sp.shards), "bytes": nbytes, "hr_sizes": sorted(sizes), "sigma": sig,
            "params": {k: _stats(v) for k, v in params.items()},
        }
    for g, members in m.groups.items():
        out["groups"][str(g)] = {"members": len(members), "invariant": sum(1 for e in members if e.invariant)}
    out["bytes"] = total_bytes
    return out


def _mb(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _stat_cell(st, fmt="{:.2f}"):
    if not st:
        return "–"
    return f"{fmt.format(st['min'])} / {fmt.format(st['median'])} / {fmt.format(st['max'])}"


def card_markdown(info: dict, figure: str | None = None) -> str:
    """The card as Markdown (``figure``: the histogram PNG's file name to embed, or None)."""
    from bsrdata.tables import markdown_table

    src = info.get("source") or {}
    rec = info.get("recipe") or {}
    title = rec.get("name") or src.get("name") or os.path.basename(info["root"])
    lines = [f"# Dataset card: {title}", ""]
    ident = [("source", src.get("name")), ("classes", src.get("num_classes")), ("recipe id", rec.get("id")),
             ("generator", info.get("generator_version")), ("seed", info.get("seed")),
             ("limit", info.get("limit")), ("complete", info.get("complete")), ("depth stored", info.get("with_depth")),
             ("IVA share of training keys", info.get("invariant_fraction")),
             ("manifest.json sha256", f"`{info['manifest_sha256']}`"), ("size on disk", _mb(info["bytes"]))]
    lines += [markdown_table(["field", "value"], [[k, str(v)] for k, v in ident if v is not None], escape=False), ""]
    lines += ["## Counts (as the paper's Table 1)", ""]
    body = []
    for name, sp in info["splits"].items():
        body.append([name, str(sp["images"] if sp["images"] is not None else "–"), str(sp["renderings"]),
                     str(sp["invariant"]), str(sp["variant"]), ", ".join(sp["hr_sizes"]), str(sp["shards"]),
                     _mb(sp["bytes"])])
    lines += [markdown_table(["split", "images", "stored renderings", "IVA", "VA", "HR size", "shards", "on disk"],
                             body), ""]
    if info["groups"]:
        gs = sorted(info["groups"], key=lambda g: int(g) if str(g).isdigit() else 0)
        lines += [markdown_table(["test group"] + [f"Group{g}" for g in gs],
                                 [["images"] + [str(info["groups"][g]["members"]) for g in gs],
                                  ["of them IVA"] + [str(info["groups"][g]["invariant"]) for g in gs]]), ""]
    a = info["attrs"]
    keys = [k for k in ("scale", "max_coc", "sigma_max", "coc_step", "renderer", "downsample", "noise") if k in a]
    lines += ["## Degradation", "", markdown_table(keys, [[str(a[k]) for k in keys]]), ""]
    lines += ["## σ (HR px) per split and rendering kind", ""]
    body = []
    for name, sp in info["splits"].items():
        for kind, s in sp["sigma"].items():
            body.append([name, kind.upper(), f"{s['mean']:.2f}", f"{s['median']:.2f}", f"{s['p95']:.2f}",
                         f"{s['max']:.2f}"])
    lines += [markdown_table(["split", "kind", "mean", "median", "95th pct", "max"], body), ""]
    if figure:
        lines += [f"![σ histograms]({figure})", ""]
    lines += ["## Rendering parameters (min / median / max over renderings)", ""]
    body = []
    for name, sp in info["splits"].items():
        p = sp["params"]
        body.append([name, _stat_cell(p["n_layers"], "{:.0f}"), _stat_cell(p["focus_m"]), _stat_cell(p["f_number"]),
                     _stat_cell(p["f_mm"], "{:.1f}"), _stat_cell(p["sigma_iva"])])
    lines += [markdown_table(["split", "depth layers (VA)", "focus (m)", "f-number", "focal length (mm)",
                              "IVA σ (px)"], body), ""]
    lines += ["## Recipe and deviations", ""]
    if rec:
        dev = rec.get("deviations")
        lines += ["Deviations from the recipe: " + ("none" if not dev else f"`{json.dumps(dev, sort_keys=True)}`"), ""]
        lines += ["```json", json.dumps({k: v for k, v in rec.items() if k != "deviations"}, indent=1,
                                        sort_keys=True), "```", ""]
    else:
        lines += ["No recipe recorded (built from explicit options).", ""]
    lines += ["Written by `bsr info --card` from the manifest and the shards (docs/pipeline.md \"Dataset card\").", ""]
    return "\n".join(lines)


def sigma_hist_figure(info: dict, path) -> str:
    """Pixel histograms of σ over [0, σ_max], a panel per split, VA and IVA renderings as separate bars."""
    from bsrdata.figures import _save, require_matplotlib

    plt = require_matplotlib()
    splits = list(info["splits"])
    edges = np.asarray(info["hist_edges"])
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.0), squeeze=False)
    for ax, name in zip(axes[0], splits):
        sig = info["splits"][name]["sigma"]
        for kind, colour, count in (("va", "tab:blue", "variant"), ("iva", "tab:orange", "invariant")):
            if kind in sig:
                h = np.asarray(sig[kind]["hist"], np.float64)
                n = info["splits"][name][count]
                ax.stairs(h / max(h.sum(), 1), edges, fill=True, alpha=0.45, color=colour,
                          label=f"{kind.upper()} ({n} renderings)")
                ax.stairs(h / max(h.sum(), 1), edges, color=colour, linewidth=1.2)
        ax.set_title(f"{name}: σ of the pixels", fontsize=9)
        ax.set_xlabel("σ (HR px)")
        ax.set_ylabel("fraction of pixels")
        ax.set_xlim(edges[0], edges[-1])
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def write_card(root, out_dir=None) -> tuple:
    """Write ``CARD.md`` and ``card_sigma_hist.png`` into ``out_dir`` (default ``root``) -> (md path, png path)."""
    from bsrdata.fileio import write_text_atomic

    info = collect(root)
    out_dir = os.fspath(out_dir or root)
    os.makedirs(out_dir, exist_ok=True)
    png = sigma_hist_figure(info, os.path.join(out_dir, "card_sigma_hist.png"))
    md = card_markdown(info, figure=os.path.basename(png))
    path = write_text_atomic(os.path.join(out_dir, "CARD.md"), md)
    return path, png
