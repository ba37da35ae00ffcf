"""The SR benchmark harness: score SR methods on the five test groups (numpy side; no torch at import).

A dataset's test groups reference stored samples; a test image's space-variant (VA) rendering is shared by
four groups. :class:`BenchData` turns the manifest's group lists into **units**: one per distinct stored
LR image (shard, index), so each is super-resolved and scored once and its score counts in every group
that contains it. Per-group PSNR/SSIM (Y channel, docs/sr.md "Metrics", optional border crop) is the mean over the
group's images; "Avg" is the mean of the group values (the paper's "average of 5 groups").

Methods (:func:`get_method`) come from the registry :data:`METHODS`. This module registers ``bicubic``
(MATLAB-style bicubic ×s of the LR) and handles ``command:"PROG {in} {out}"`` (an external program that
reads a folder of LR PNGs and writes SR PNGs with the same names; run without a shell unless
``shell=True``). Other methods register themselves with :func:`register_method` when their module is
imported: the torch methods (``oracle``, ``cmos+rrdb_sft``) live in ``bsrdata.models.bench_methods``,
which ``bsr bench`` imports; this module never imports torch or the models. Any spec may carry a label:
``"MANet=command:python test.py {in} {out}"``.

:func:`score_units` is the one scoring loop: it super-resolves units and scores them (PSNR/SSIM on Y).
:func:`run_bench` uses it with result files; the training engine's SR validation uses it in memory with
the network wrapped as a :class:`CallableMethod`.

Results are resumable: per method, ``OUT/results/<slug>.jsonl`` holds a header (provenance, with the
scoring conventions of :func:`bsrdata.metrics.sr_conventions`) and one line per scored unit; a rerun
skips the units already there. Tables (``bench.md``, ``bench.csv``, ``bench.json``, each naming the
conventions) list every completed method in OUT scored on the same dataset (manifest hash) with the
same crop and groups.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.fileio import write_text_atomic
from bsrdata.metrics import psnr_y, sr_conventions, ssim_y, to_uint8
from bsrdata.registry import Registry
from bsrdata.tables import bench_csv as format_csv
from bsrdata.tables import bench_markdown as format_markdown
from bsrdata.tables import table_rows

__all__ = [
    "Unit", "BenchData", "Method", "BicubicMethod", "CommandMethod", "CallableMethod", "METHODS",
    "register_method", "method_names", "get_method", "split_label", "parse_groups", "score_units",
    "run_bench", "BenchResult", "summarise", "format_markdown", "format_csv", "table_rows",
]

RESULTS_FORMAT = "bsrdata-bench/1"

#: Bench methods by name: factories ``f(label, body, **options) -> Method`` (``label`` None when the spec
#: has none; ``options`` are every option of :func:`get_method`, a factory ignores those it does not use).
METHODS = Registry("bench method")
COMMAND_PREFIX = "command:"


def register_method(name: str):
    """Decorator: register a method factory ``f(label, body, **options) -> Method`` under ``name``."""
    return METHODS.register(name)


def method_names() -> list[str]:
    """The registered method names and aliases (sorted), then ``command:``."""
    return METHODS.names() + sorted(METHODS.aliases()) + [COMMAND_PREFIX]


# ------------------------------------------------------------------------------------------------ data
@dataclasses.dataclass(frozen=True)
class Unit:
    """One distinct stored LR image of the test split: ``uid`` is a file-name-safe unique name."""

    uid: str
    shard: str
    index: int
    key: str
    invariant: bool


def parse_groups(text, option: str = "--groups") -> list[int]:
    """``"1-5"``, ``"1,3"``, ``"2"`` or ``"all"`` -> sorted list of group numbers (>= 1); ``option`` names the
    command-line option in the error message."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return [1, 2, 3, 4, 5]
    out = set()
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        try:
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if a > b:
                    raise ValueError
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise BsrError(f"{option}: cannot read {text!r} (use e.g. 1-5, 1,3 or all)") from None
    if not out or min(out) < 1:
        raise BsrError(f"{option}: group numbers start at 1, got {text!r}")
    return sorted(out)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._") or "x"


class BenchData:
    """The test groups of a built dataset (``root/manifest.json`` + HDF5 shards), as units.

    ``units`` (uid -> :class:`Unit`), ``groups`` (g -> list of uids in manifest order), ``group_ids``,
    ``scale``, ``sigma_max`` (σ in HR px), ``num_classes``, ``manifest_sha256``. ``load(uid)`` returns the
    sample dict (``lr``/``hr`` uint8 RGB, ``blur`` float32 σ, ``seg`` uint8 or None, ``key``, ``invariant``).

    With ``split="NAME"`` (instead of ``groups``) the units are every stored sample of that split, in the
    split's order, as one group named ``NAME`` (``group_ids == ["NAME"]``).
    """

    def __init__(self, root, groups=None, *, split=None):
        from bsrdata.manifest import ABSENT, NAME, load_manifest, sha256_file

        self.root = os.fspath(root)
        m = load_manifest(self.root)
        self.manifest = m
        self.manifest_path = os.path.join(self.root, NAME)
        self.manifest_sha256 = sha256_file(self.manifest_path)
        attrs = m.attrs or {}
        self.scale = int(attrs.get("scale", 4))
        self.sigma_max = float(attrs.get("sigma_max", (attrs.get("max_coc", 21) - 1) / 4))
        ncls = m.source.num_classes if m.source not in (ABSENT, None) else None
        self.num_classes = None if ncls is ABSENT else ncls
        self.units: dict[str, Unit] = {}
        self.groups: dict = {}
        self._by_ref: dict[tuple, str] = {}
        self._used: set[str] = set()
        if split is not None:
            if split not in m.splits:
                have = ", ".join(sorted(m.splits)) or "none"
                raise BsrError(f"{self.manifest_path}: no split '{split}' (has {have})")
            self.group_ids = [split]
            self.groups[split] = [self._unit(sh.path, i, k, inv) for sh in m.splits[split].shards
                                  for i, (k, inv) in enumerate(zip(sh.keys, sh.invariant))]
            return
        available = sorted(int(g) for g in m.groups if str(g).isdigit() and m.groups[g])
        wanted = parse_groups(groups) if not isinstance(groups, list) else groups
        for g in wanted:
            if g not in available:
                have = ", ".join(map(str, available)) or "none"
                raise BsrError(f"{self.manifest_path}: no test group {g} (groups present: {have})")
        self.group_ids = wanted
        for g in wanted:
            self.groups[g] = [self._unit(e.shard, e.index, e.key, e.invariant) for e in m.groups[str(g)]]

    def _unit(self, shard, index, key, invariant) -> str:
        """The uid of stored sample (shard, index), made on first sight (one unit per stored image)."""
        ref = (str(shard), int(index))
        uid = self._by_ref.get(ref)
        if uid is None:
            base = _safe(f"{key}_{'iva' if invariant else 'va'}")
            uid, n = base, 1
            while uid in self._used:
                n += 1
                uid = f"{base}_{n}"
            self._used.add(uid)
            self._by_ref[ref] = uid
            self.units[uid] = Unit(uid, ref[0], ref[1], str(key), bool(invariant))
        return uid

    def select(self, limit: int = 0) -> dict:
        """``groups`` with each group cut to its first ``limit`` uids (0 = all)."""
        return {g: (u[:limit] if limit else list(u)) for g, u in self.groups.items()}

    def load(self, uid: str) -> dict:
        from bsrdata.shards import read_sample, shard_path

        u = self.units[uid]
        count = next((sh.count for sp in self.manifest.splits.values() for sh in sp.shards
                      if sh.path == u.shard), None)
        s = read_sample(shard_path(self.root, u.shard), u.index, count=count)
        if s["key"] != u.key:
            raise BsrError(f"{os.path.join(self.root, u.shard)}: sample {u.index} is not '{u.key}' as the "
                           "manifest says")
        _check_sample(s, f"{u.shard}[{u.index}]", self.scale)
        return s

    def provenance(self) -> dict:
        return {"root": os.path.abspath(self.root), "manifest_sha256": self.manifest_sha256,
                "groups": self.group_ids, "scale": self.scale, "units": len(self.units)}


def _check_sample(s: dict, where: str, scale: int):
    lr, hr = np.asarray(s["lr"]), np.asarray(s["hr"])
    for name, a in (("lr", lr), ("hr", hr)):
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise BsrError(f"{where}: {name} is not uint8 RGB (shape {a.shape}, {a.dtype})")
    if hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
        raise BsrError(f"{where}: HR {hr.shape[:2]} is not {scale}x the LR {lr.shape[:2]}")


# --------------------------------------------------------------------------------------------- methods
class Method:
    """An SR method for the harness.

    ``label`` names its table row; ``spec`` is what the user typed. ``prepare(data)`` checks it can run
    on ``data`` (checkpoints, ...) and raises BsrError otherwise. ``run(samples, workdir)`` takes a list of
    (uid, sample dict) and returns the SR images as uint8 RGB (s·h, s·w, 3), in the same order.
    ``provenance()`` is a JSON-able dict (with checkpoint hashes); ``identity()`` is the part of it that
    decides whether stored results can be reused.
    """

    label = "method"
    spec = "method"
    chunk = 8

    def prepare(self, data) -> None:
        pass

    def run(self, samples, workdir) -> list:
        raise NotImplementedError

    def provenance(self) -> dict:
        return {"method": self.spec, "label": self.label}

    def identity(self) -> dict:
        return self.provenance()

    def close(self) -> None:
        pass


class BicubicMethod(Method):
    """MATLAB-style bicubic ×scale upsampling of the LR (``bsrdata.degrade.imresize_bicubic``)."""

    chunk = 16

    def __init__(self, label="bicubic"):
        self.label = label
        self.spec = "bicubic"
        self.scale = 4

    def prepare(self, data):
        self.scale = data.scale

    def run(self, samples, workdir):
        from bsrdata.degrade import imresize_bicubic

        out = []
        for _, s in samples:
            lr = np.asarray(s["lr"], dtype=np.float64) / 255.0
            h, w = lr.shape[:2]
            sr = imresize_bicubic(lr, float(self.scale), out_shape=(h * self.scale, w * self.scale))
            out.append(to_uint8(sr))
        return out

    def provenance(self):
        return {"method": "bicubic", "label": self.label, "scale": self.scale,
                "resize": "MATLAB imresize bicubic (a = -0.5), rounded to uint8"}


class CommandMethod(Method):
    """An external program: ``{in}`` is a folder of LR PNGs (``<uid>.png``), ``{out}`` the folder where it
    must write SR PNGs with the same names. Tokens are split like a POSIX shell and run without a shell
    unless ``shell=True`` (then the placeholders are substituted shell-quoted)."""

    def __init__(self, command: str, label=None, shell=False, chunk=32, timeout=None):
        command = command.strip()
        if not command:
            raise BsrError("--method: command: needs a program, e.g. command:\"python sr.py {in} {out}\"")
        if "{in}" not in command or "{out}" not in command:
            raise BsrError(f"--method: command {command!r} must contain both {{in}} and {{out}}")
        self.command = command
        self.shell = bool(shell)
        if not self.shell:
            try:
                self.argv = shlex.split(command)
            except ValueError as exc:
                raise BsrError(f"--method: cannot split command {command!r}: {exc}") from None
        self.label = label or "command-" + hashlib.sha256(command.encode()).hexdigest()[:8]
        self.spec = "command:" + command
        self.chunk = max(1, int(chunk))
        self.timeout = timeout
        self.scale = 4

    def prepare(self, data):
        self.scale = data.scale

    def _argv(self, din, dout):
        if self.shell:
            return self.command.replace("{in}", shlex.quote(din)).replace("{out}", shlex.quote(dout))
        return [a.replace("{in}", din).replace("{out}", dout) for a in self.argv]

    def run(self, samples, workdir):
        from PIL import Image

        din = os.path.abspath(os.path.join(workdir, "in"))
        dout = os.path.abspath(os.path.join(workdir, "out"))
        for d in (din, dout):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        for uid, s in samples:
            Image.fromarray(np.asarray(s["lr"], dtype=np.uint8)).save(os.path.join(din, uid + ".png"))
        log_path = os.path.join(workdir, "command.log")
        try:
            with open(log_path, "ab") as log:
                proc = subprocess.run(self._argv(din, dout), shell=self.shell, stdout=log, stderr=subprocess.PIPE,
                                      timeout=self.timeout, stdin=subprocess.DEVNULL)
                log.write(proc.stderr)
        except FileNotFoundError:
            prog = self.argv[0] if not self.shell else self.command
            raise BsrError(f"{self.label}: command not found: {prog}") from None
        except PermissionError:
            raise BsrError(f"{self.label}: command is not executable: {self.argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise BsrError(f"{self.label}: command timed out after {self.timeout} s") from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
            tail = f": {lines[-1].strip()}" if lines else ""
            raise BsrError(f"{self.label}: command exited with status {proc.returncode}{tail} (log: {log_path})")
        written = [f for f in os.listdir(dout) if f.lower().endswith(".png")]
        if not written:
            raise BsrError(f"{self.label}: command wrote no SR images (expected {len(samples)} PNGs in {{out}})")
        out = []
        for uid, s in samples:
            p = os.path.join(dout, uid + ".png")
            if not os.path.isfile(p):
                raise BsrError(f"{self.label}: command wrote no SR image for {uid}.png")
            try:
                with Image.open(p) as im:
                    if im.mode not in ("RGB", "RGBA", "L"):
                        raise BsrError(f"{self.label}: {uid}.png has mode {im.mode}, expected 8-bit RGB")
                    sr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except OSError as exc:
                raise BsrError(f"{self.label}: {uid}.png is not a readable image ({exc})") from None
            lr = np.asarray(s["lr"])
            want = (lr.shape[0] * self.scale, lr.shape[1] * self.scale)
            if sr.shape[:2] != want:
                raise BsrError(f"{self.label}: {uid}.png is {sr.shape[1]}x{sr.shape[0]}, "
                               f"expected {want[1]}x{want[0]} (x{self.scale} the LR)")
            out.append(sr)
        return out

    def provenance(self):
        return {"method": self.spec, "label": self.label, "shell": self.shell}


class CallableMethod(Method):
    """A method from a function ``fn(sample dict) -> uint8 RGB SR (s·h, s·w, 3)``, e.g. a network in memory
    (the training engine's validation). Its results are not stored, so it has no identity of its own."""

    chunk = 1

    def __init__(self, fn, label="model"):
        self.fn = fn
        self.label = self.spec = label

    def run(self, samples, workdir):
        return [self.fn(s) for _, s in samples]


@register_method("bicubic")
def _bicubic(label, body, **_options):
    return BicubicMethod(label or "bicubic")


def split_label(spec: str):
    """``"LABEL=SPEC"`` -> (label, spec) when SPEC is a registered method name (or alias) or a
    ``command:``; otherwise (None, spec)."""
    m = re.fullmatch(r"([A-Za-z0-9_.+-]+)=(.+)", spec.strip(), flags=re.S)
    if m and (m.group(2).startswith(COMMAND_PREFIX) or m.group(2) in METHODS):
        return m.group(1), m.group(2)
    return None, spec.strip()


def get_method(spec: str, *, shell=False, chunk=32, timeout=None, **options) -> Method:
    """Build a method from its spec (see the module docstring). ``shell``, ``chunk`` and ``timeout`` are
    for ``command:`` methods; every option goes to the factory of a registered method (the torch methods
    take ``ckpt``, ``cmos_ckpt``, ``device``)."""
    label, body = split_label(spec)
    if body.startswith(COMMAND_PREFIX):
        cmd = body[len(COMMAND_PREFIX):].strip()
        if len(cmd) >= 2 and cmd[0] == cmd[-1] and cmd[0] in "\"'":
            cmd = cmd[1:-1]
        return CommandMethod(cmd, label=label, shell=shell, chunk=chunk, timeout=timeout)
    if body not in METHODS:
        raise BsrError(f"--method: {METHODS.unknown(body)}; or command:\"PROG {{in}} {{out}}\"")
    return METHODS.get(body)(label, METHODS.resolve(body), shell=shell, chunk=chunk, timeout=timeout,
                             **options)


# --------------------------------------------------------------------------------------------- results
def _slug(method: Method, identity: dict) -> str:
    h = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"{_safe(method.label)}-{h}"


def _read_jsonl(path):
    header, scores = None, {}
    if not os.path.isfile(path):
        return header, scores
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if "header" in rec:
                header = rec["header"]
            elif "uid" in rec:
                scores[rec["uid"]] = rec
    return header, scores


def _num(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def summarise(groups: dict, scores: dict) -> dict:
    """Per-group means and their average: ``{"groups": {"1": {"psnr", "ssim", "n"}}, "avg": {...}}``."""
    out = {"groups": {}}
    gp, gs = [], []
    for g, uids in groups.items():
        p = [scores[u]["psnr"] for u in uids]
        s = [scores[u]["ssim"] for u in uids]
        mp = float(np.mean(p)) if p else math.nan
        ms = float(np.mean(s)) if s else math.nan
        out["groups"][str(g)] = {"psnr": mp, "ssim": ms, "n": len(uids)}
        gp.append(mp)
        gs.append(ms)
    out["avg"] = {"psnr": float(np.mean(gp)), "ssim": float(np.mean(gs)), "n": len(gp)}
    return out


def score_units(data: BenchData, method: Method, uids, *, crop_border: int = 0, workdir=None,
                on_chunk=None, bar=None, strata=None) -> dict:
    """The scoring loop: super-resolve ``uids`` of ``data`` with ``method`` (``method.chunk`` at a time, each
    uid once) and score each SR against its HR -> ``{uid: {"uid", "psnr", "ssim"}}`` (PSNR in dB and SSIM on
    Y, :mod:`bsrdata.metrics`, ``crop_border`` px cropped per side).

    ``method.prepare`` is the caller's job. ``on_chunk(records, srs)`` is called after each chunk with its
    score records and uint8 SR images (for result files); ``bar.update(n)`` after each chunk. With
    ``strata`` (a :class:`bsrdata.strata.StrataSpec`) each record also carries ``"strata"`` (per-stratum
    sums, :func:`bsrdata.strata.sr_unit_stats`) and ``"strata_key"``.
    """
    uids = list(uids)
    scores = {}
    for i in range(0, len(uids), method.chunk):
        chunk = uids[i:i + method.chunk]
        samples = [(u, data.load(u)) for u in chunk]
        srs = [np.asarray(sr) for sr in method.run(samples, workdir)]
        if len(srs) != len(samples):
            raise BsrError(f"{method.label}: returned {len(srs)} SR images for {len(samples)} inputs")
        records = []
        for (u, s), sr in zip(samples, srs):
            hr = np.asarray(s["hr"])
            if sr.shape != hr.shape or sr.dtype != np.uint8:
                raise BsrError(f"{method.label}: SR for {u} is {sr.shape} {sr.dtype}, expected uint8 {hr.shape}")
            rec = {"uid": u, "psnr": psnr_y(sr, hr, crop_border), "ssim": ssim_y(sr, hr, crop_border)}
            if strata is not None:
                from bsrdata.strata import sr_unit_stats

                rec["strata_key"] = strata.key()
                rec["strata"] = sr_unit_stats(sr, hr, s["blur"], strata, crop_border)
            records.append(rec)
            scores[u] = rec
        if on_chunk is not None:
            on_chunk(records, srs)
        if bar:
            bar.update(len(chunk))
    return scores


@dataclasses.dataclass
class BenchResult:
    rows: list  # [{"label", "provenance", "groups": {...}, "avg": {...}}]
    errors: list  # ["label: problem", ...]
    files: dict  # {"md": path, "csv": path, "json": path}
    markdown: str


def run_bench(data: BenchData, methods: list, out_dir, *, crop_border: int = 0, progress=None,
              save_images: bool = False, fresh: bool = False, strata=None) -> BenchResult:
    """Score ``methods`` on ``data``'s groups; resumable through ``out_dir/results``.

    ``progress(total, desc)`` -> an object with ``update(n)`` and ``close()`` (e.g. a tqdm), or None.
    A method that fails (BsrError) is recorded in ``errors`` and the others still run; the tables are
    rewritten after each method, so finished results are never lost. ``strata`` (a
    :class:`bsrdata.strata.StrataSpec`): stored units without strata of that spec are scored again
    (the later line wins); :func:`bsrdata.strata.write_bench_strata` tabulates them.
    """
    crop_border = int(crop_border)
    if crop_border < 0:
        raise BsrError(f"--crop-border: must be >= 0, got {crop_border}")
    out_dir = os.fspath(out_dir)
    from bsrdata.lock import folder_lock

    with folder_lock(out_dir, "bench"):  # one writer per results folder (docs/pipeline.md, "Guarantees")
        return _run_bench(data, methods, out_dir, crop_border, progress, save_images, fresh, strata)


def _run_bench(data, methods, out_dir, crop_border, progress, save_images, fresh, strata) -> BenchResult:
    rdir = os.path.join(out_dir, "results")
    os.makedirs(rdir, exist_ok=True)
    order = list(data.units)
    errors, current = [], []
    for method in methods:
        try:
            method.prepare(data)
            ident = {"method": method.identity(), "manifest_sha256": data.manifest_sha256,
                     "crop_border": crop_border, "format": RESULTS_FORMAT}
            slug = _slug(method, ident)
            path = os.path.join(rdir, slug + ".jsonl")
            if fresh and os.path.exists(path):
                os.remove(path)
            header, scores = _read_jsonl(path)
            scores = {u: r for u, r in scores.items() if u in data.units}
            if strata is not None:
                scores = {u: r for u, r in scores.items() if r.get("strata_key") == strata.key()}
            if header is None:
                header = {"format": RESULTS_FORMAT, "label": method.label, "identity": ident,
                          "provenance": {**method.provenance(), "dataset": data.provenance(),
                                         "crop_border": crop_border,
                                         "conventions": sr_conventions(crop_border),
                                         "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
                with open(path, "w", encoding="utf-8") as f:
                    f.write(json.dumps({"header": header}) + "\n")
            todo = [u for u in order if u not in scores]
            bar = progress(len(order), method.label) if progress else None
            if bar:
                bar.update(len(order) - len(todo))
            workdir = os.path.join(out_dir, "work", slug)
            img_dir = os.path.join(out_dir, "sr", _safe(method.label))

            def write(records, srs):
                with open(path, "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(rec) + "\n" for rec in records)
                    f.flush()
                if save_images:
                    from PIL import Image

                    os.makedirs(img_dir, exist_ok=True)
                    for rec, sr in zip(records, srs):
                        Image.fromarray(sr).save(os.path.join(img_dir, rec["uid"] + ".png"))

            try:
                score_units(data, method, todo, crop_border=crop_border, workdir=workdir, on_chunk=write, bar=bar,
                            strata=strata)
            finally:
                if bar:
                    bar.close()
            shutil.rmtree(workdir, ignore_errors=True)
            current.append(slug)
        except (BsrError, RuntimeError, ValueError, OSError) as exc:
            # one line per failed method; the others still run and their results stay in the tables
            msg = " ".join(str(exc).split()) or type(exc).__name__
            if not isinstance(exc, BsrError):
                msg = f"{type(exc).__name__}: {msg}"
            if not msg.startswith(method.label):
                msg = f"{method.label}: {msg}"
            errors.append(msg)
        finally:
            method.close()
        files, md, rows = _write_tables(data, out_dir, crop_border, current)
    if not methods:
        files, md, rows = _write_tables(data, out_dir, crop_border, current)
    return BenchResult(rows=rows, errors=errors, files=files, markdown=md)


def _collect_rows(data, out_dir, crop_border, current):
    """Completed methods in ``out_dir/results`` for this dataset and crop: this run's first, in order."""
    rdir = os.path.join(out_dir, "results")
    found = {}
    for name in sorted(os.listdir(rdir)) if os.path.isdir(rdir) else []:
        if not name.endswith(".jsonl"):
            continue
        slug = name[:-6]
        header, scores = _read_jsonl(os.path.join(rdir, name))
        if not header:
            continue
        ident = header.get("identity", {})
        if ident.get("manifest_sha256") != data.manifest_sha256 or ident.get("crop_border") != crop_border:
            continue
        if not all(u in scores for u in data.units):
            continue
        found[slug] = (header, scores)
    ordered = [s for s in current if s in found]
    # earlier runs' methods follow, newest result per label; a label scored in this run hides older ones
    labels = {found[s][0]["label"] for s in ordered}
    rest = []
    for slug in sorted((s for s in found if s not in ordered),
                       key=lambda s: found[s][0]["provenance"].get("started", ""), reverse=True):
        if found[slug][0]["label"] not in labels:
            labels.add(found[slug][0]["label"])
            rest.append(slug)
    rest.reverse()
    rows = []
    for slug in ordered + rest:
        header, scores = found[slug]
        summ = summarise(data.groups, scores)
        rows.append({"label": header["label"], "slug": slug, "provenance": header["provenance"], **summ})
    return rows


def _write_tables(data, out_dir, crop_border, current):
    rows = _collect_rows(data, out_dir, crop_border, current)
    gids = data.group_ids
    md = format_markdown(rows, gids, crop_border)
    doc = {
        "format": RESULTS_FORMAT,
        "dataset": data.provenance(),
        "crop_border": crop_border,
        "metric": "PSNR (dB, peak 255) / SSIM (11x11 Gaussian 1.5, valid) on Y = 16 + 65.481R + 128.553G + 24.966B",
        "conventions": sr_conventions(crop_border),
        "methods": [{"label": r["label"], "provenance": r["provenance"],
                     "groups": {g: {k: _num(v) for k, v in d.items()} for g, d in r["groups"].items()},
                     "avg": {k: _num(v) for k, v in r["avg"].items()}} for r in rows],
    }
    files = {"md": os.path.join(out_dir, "bench.md"), "csv": os.path.join(out_dir, "bench.csv"),
             "json": os.path.join(out_dir, "bench.json")}
    write_text_atomic(files["md"], md)
    write_text_atomic(files["csv"], format_csv(rows, gids, crop_border))
    write_text_atomic(files["json"], json.dumps(doc, indent=2) + "\n")
    return files, md, rows
