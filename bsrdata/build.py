"""Build a dataset: plan -> shards (process pool, resumable, sliceable) -> manifest.json (last, atomically).

Shard layout is fixed by the plan, never by completion order: split ``S``'s renderings, in plan order, are
cut into consecutive shards of ``shard_size`` at ``S/S-00000.h5``, ``S/S-00001.h5``, ... A shard's bytes
depend only on the source, the seed, the config and its items, so 1 and N workers give identical files.

Resume: a shard under its final name is complete (written to ``<name>.tmp<pid>``, fsynced, renamed). Its attribute
``build_id`` (SHA-256 of everything its content depends on) is compared with the planned one; if equal it
is kept, not re-rendered. Leftover ``.tmp<pid>`` files are never counted and are removed when their shard is written.

Slices: ``shard="K/N"`` builds the shards whose global index i (over all splits, in order) has
i mod N == K − 1 and writes ``manifest-part-K-of-N.json`` instead of ``manifest.json``; :func:`merge`
joins the parts. A part folder is never a complete dataset (no ``manifest.json``). ``shard="auto"`` takes
K/N from a SLURM job array or torchrun's RANK/WORLD_SIZE (:func:`shard_from_env`).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import queue as queue_mod
import re
import resource
import shutil
import time

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.fileio import remove_temps, tmp_name
from bsrdata.lock import folder_lock
from bsrdata.manifest import FORMAT, NAME, sha256_file, write_json_atomic, write_manifest
from bsrdata.shards import DEFAULT_SHARD_FORMAT, fields_for, shard_path
from bsrdata.workers import check_workers, die_with_parent, pool_size

N_HIST = 10


@dataclasses.dataclass
class ShardJob:
    """One shard to build: global ``index``, ``split``, relative ``path``, items ``(key, invariant, group)``."""

    index: int
    split: str
    path: str
    items: list
    with_seg: bool
    build_id: str = ""


_SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")
_TORCHRUN = ("RANK", "WORLD_SIZE")


def _env_int(env, name):
    text = env[name].strip()
    if not re.fullmatch(r"-?\d+", text):
        raise BsrError(f"--shard auto: {name}={env[name]!r} is not an integer")
    return int(text)


def shard_from_env(environ=None) -> tuple[int, int]:
    """``--shard auto``: (K, N) from a SLURM job array or from torchrun-style ranks.

    SLURM (``sbatch --array=A-B``, optionally ``:STEP``): K = (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN)
    / STEP + 1, N = SLURM_ARRAY_TASK_COUNT; the ids must be one evenly spaced range (checked against
    SLURM_ARRAY_TASK_MAX and SLURM_ARRAY_TASK_STEP when set). torchrun: K = RANK + 1, N = WORLD_SIZE.
    When both are set they must name the same slice. BsrError (one line) when neither is set, a variable
    is missing or not an integer, or the values do not fit together."""
    env = os.environ if environ is None else environ
    found = {}
    if any(v in env for v in _SLURM):
        missing = [v for v in _SLURM if v not in env]
        if missing:
            raise BsrError(f"--shard auto: SLURM job array variables incomplete: {', '.join(missing)} not set")
        tid, count, lo = (_env_int(env, v) for v in _SLURM)
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
        if count < 1 or step < 1:
            raise BsrError(f"--shard auto: SLURM_ARRAY_TASK_COUNT={count} / SLURM_ARRAY_TASK_STEP={step} must be >= 1")
        if "SLURM_ARRAY_TASK_MAX" in env:
            hi = _env_int(env, "SLURM_ARRAY_TASK_MAX")
            if hi < lo or (hi - lo) % step or (hi - lo) // step + 1 != count:
                raise BsrError(f"--shard auto: the SLURM array is not one evenly spaced range (ids {lo}..{hi} "
                               f"step {step}, {count} tasks); use --array=0-{count - 1}")
        off = tid - lo
        if off < 0 or off % step or off // step >= count:
            raise BsrError(f"--shard auto: SLURM_ARRAY_TASK_ID={tid} is not one of the {count} ids from "
                           f"SLURM_ARRAY_TASK_MIN={lo} (step {step})")
        found["SLURM job array"] = (off // step + 1, count)
    if any(v in env for v in _TORCHRUN):
        missing = [v for v in _TORCHRUN if v not in env]
        if missing:
            raise BsrError(f"--shard auto: torchrun variables incomplete: {', '.join(missing)} not set")
        rank, world = (_env_int(env, v) for v in _TORCHRUN)
        if world < 1 or not 0 <= rank < world:
            raise BsrError(f"--shard auto: RANK={rank} must be in [0, WORLD_SIZE={world})")
        found["RANK/WORLD_SIZE"] = (rank + 1, world)
    if not found:
        raise BsrError("--shard auto: no SLURM job array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, "
                       "SLURM_ARRAY_TASK_MIN) or torchrun ranks (RANK, WORLD_SIZE) in the environment; "
                       "give --shard K/N")
    if len(set(found.values())) > 1:
        raise BsrError("--shard auto: the environment names two slices: "
                       + ", ".join(f"{k} {a}/{b}" for k, (a, b) in found.items()))
    return next(iter(found.values()))


def parse_shard(spec) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 ≤ K ≤ N; ``"auto"`` -> :func:`shard_from_env`; BsrError otherwise."""
    if spec is None:
        return 1, 1
    if isinstance(spec, tuple):
        k, n = spec
    elif str(spec).strip().lower() == "auto":
        return shard_from_env()
    else:
        mt = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
        if not mt:
            raise BsrError(f"--shard: expected K/N (e.g. 2/8) or auto, got '{spec}'")
        k, n = int(mt.group(1)), int(mt.group(2))
    if not (n >= 1 and 1 <= k <= n):
        raise BsrError(f"--shard: K/N needs 1 <= K <= N, got {k}/{n}")
    return k, n


def part_manifest_name(k: int, n: int) -> str:
    return f"manifest-part-{k}-of-{n}.json"


def check_out_dir(out_dir) -> str:
    """Create the output folder if needed and prove a file can be written there; return its path.
    BsrError (naming ``--out``) when it is a file, cannot be created or is not writable."""
    out = os.fspath(out_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise BsrError(f"--out {out}: exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".bsr-write-test-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"x")
        os.remove(probe)
    except OSError as exc:
        raise BsrError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK):
        raise BsrError(f"--out {out}: folder is not writable")
    return out


def _splits_with_limit(source, limit):
    splits = source.splits()
    if not isinstance(splits, dict) or not splits:
        raise BsrError(f"source {getattr(source, 'name', '?')}: no splits")
    if limit is not None:  # checked by check_build_options
        splits = {s: list(k)[: int(limit)] for s, k in splits.items()}
    return {s: list(k) for s, k in splits.items() if len(k)}


def plan_shards(plan, shard_size: int, labelled: dict) -> list[ShardJob]:
    """Cut the plan's renderings into shards of ``shard_size`` (split order, then plan order)."""
    if int(shard_size) < 1:
        raise BsrError(f"--shard-size: must be >= 1, got {shard_size}")
    jobs = []
    for split, items in plan.items.items():
        for j, start in enumerate(range(0, len(items), int(shard_size))):
            chunk = items[start:start + int(shard_size)]
            its = [(k, bool(inv), plan.render_group(split, k, inv)) for k, inv in chunk]
            jobs.append(ShardJob(len(jobs), split, f"{split}/{split}-{j:05d}.h5", its, bool(labelled.get(split))))
    return jobs


def _build_id(job: ShardJob, attrs: dict, seed, source_name, with_depth, source_options=None) -> str:
    d = {"attrs": attrs, "seed": int(seed), "source": source_name, "with_depth": bool(with_depth),
         "with_seg": job.with_seg, "items": job.items, "path": job.path}
    if source_options:  # how the source reads its files (e.g. a folder's --size): a resume must not mix them
        d["source_options"] = source_options
    blob = json.dumps(d, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def sigma_edges(sigma_max: float) -> np.ndarray:
    return np.linspace(0.0, float(sigma_max), N_HIST + 1)


# ------------------------------------------------------------------------------------ worker side
_W = {}


def _init_worker(ctx):
    from bsrdata.render import set_render_threads

    set_render_threads(1)  # the processes fill the cores; threads would compete (and cannot run in a fork)
    _W.clear()
    _W.update(ctx)


_PDEATHSIG = True  # tests set False to check the getppid() watch alone


def _init_pool_worker(ctx, parent_pid, pdeathsig):
    die_with_parent(parent_pid, pdeathsig=pdeathsig)  # a killed build must not leave workers rendering
    _init_worker(ctx)


def _report(n=1):
    q = _W.get("queue")
    if q is not None:
        q.put(n)
    cb = _W.get("callback")
    if cb is not None:
        cb(n)


def _render_shard(job: ShardJob) -> dict:
    """Render and write one shard (in a worker or in-process); returns its manifest entry and stats."""
    from bsrdata.degrade import synthesize
    from bsrdata.shards import ShardWriter, sigma_levels

    source, cfg, seed, out, with_depth = _W["source"], _W["cfg"], _W["seed"], _W["out"], _W["with_depth"]
    attrs = dict(_W["attrs"], build_id=job.build_id, split=job.split)
    path = os.path.join(out, job.path)
    hist = np.zeros(N_HIST, dtype=np.int64)
    edges = sigma_edges(cfg.sigma_max)
    stretched, notes = [], {}
    fmt = int(attrs.get("shard_format", 1))
    with ShardWriter(path, len(job.items), attrs, with_seg=job.with_seg, with_depth=with_depth,
                     shard_format=fmt, blur_levels=sigma_levels(attrs) if fmt >= 2 else None) as w:
        for key, inv, group in job.items:
            rec = source.load(key)
            try:
                s = synthesize(rec, cfg, seed, inv, group)
            except OSError as exc:  # numba saving a kernel it compiled for this frame, on a full disk
                raise BsrError(f"{exc.filename or path}: cannot write ({exc.strerror or exc})") from None
            hist += np.histogram(np.clip(s["blur"], 0, cfg.sigma_max), bins=edges)[0]
            if not inv:
                stretched.extend(_outlier_check(rec, s))
            for note in getattr(rec, "notes", ()):
                notes[note] = notes.get(note, 0) + 1
            w.add(s)
            _report(1)
    return dict(_entry(job, path, hist, rendered=True), depth_outliers=stretched, notes=notes)


# A variant rendering whose extreme 0.5 % of depths widen the inverse-depth range this much leaves the other
# pixels' CoC at most ~1/4 of max_coc: the build warns (docs/sources.md, "Depth outliers").
OUTLIER_PERCENT = 0.5
OUTLIER_STRETCH = 4.0


def _outlier_check(rec, s) -> list:
    """``[(key, stretch)]`` when the frame's CoC normalisation is set by a tiny fraction of its pixels."""
    from bsrdata.optics import depth_outlier_stretch

    d = np.asarray(rec.depth)[: s["blur"].shape[0], : s["blur"].shape[1]]
    valid = np.isfinite(d) & (d > 0)
    k = depth_outlier_stretch(s["depth"], valid, OUTLIER_PERCENT)
    return [(str(rec.key), float(k))] if k > OUTLIER_STRETCH else []


def conversion_note(entries) -> str | None:
    """One line counting what the source converted while reading (grey / RGBA / 16-bit input, --size)."""
    total = {}
    for e in entries:
        for note, n in (e.get("notes") or {}).items():
            total[note] = total.get(note, 0) + n
    if not total:
        return None
    parts = ", ".join(f"{n} {note}" for note, n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"note: renderings from converted input: {parts} (docs/sources.md)"


def few_test_images_warning(plan, n_groups=5) -> str | None:
    """A warning when the grouped test split is too small for its groups to differ (fewer images than
    groups: every fold is empty, so each group holds only variant renderings and all groups are equal)."""
    if not plan.groups:
        return None
    n = len({k for k, _ in plan.groups[min(plan.groups)]})
    if any(inv for members in plan.groups.values() for _, inv in members):
        return None
    return (f"warning: the test split has {n} images, fewer than the {max(5, n_groups)} that {n_groups} test "
            "groups need: every group is the same, none holds an invariant image (docs/pipeline.md)")


def depth_outlier_warning(flagged, total, clip) -> str | None:
    """The one warning line of a build whose variant renderings had outlier-dominated depth, or None."""
    if not flagged:
        return None
    worst = max(flagged, key=lambda kv: kv[1])
    hint = (f"--depth-clip {clip:g} is on; raise it" if clip else
            "clamp each frame's depth with --depth-clip 1 (percent at each end)")
    return (f"warning: {len(flagged)} of {total} variant renderings have depth outliers: their nearest/"
            f"farthest {OUTLIER_PERCENT:g} % of pixels widen the inverse-depth range over {OUTLIER_STRETCH:g}x "
            f"(worst {worst[0]}: {worst[1]:.1f}x), so most of their blur maps is compressed toward sigma 0; "
            f"{hint} (docs/sources.md, 'Depth outliers')")


def _entry(job, path, hist, rendered):
    from bsrdata.shards import shard_entry

    return {
        "index": job.index,
        "split": job.split,
        **shard_entry(path, job.path, [k for k, _, _ in job.items], [i for _, i, _ in job.items]),
        "hist": [int(x) for x in hist],
        "rendered": rendered,
        "pid": os.getpid(),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def _existing_ok(path, job: ShardJob) -> bool:
    """True if ``path`` is a complete shard of exactly this job (same build_id, keys, counts)."""
    if not os.path.isfile(path):
        return False
    try:
        from bsrdata.shards import check_shard, h5py_module

        with h5py_module().File(path, "r") as f:
            meta = check_shard(f, path)
            bid = f.attrs.get("build_id")
        bid = bid.decode() if isinstance(bid, bytes) else bid
        return (bid == job.build_id and meta["n"] == len(job.items)
                and meta["keys"] == [k for k, _, _ in job.items])
    except (OSError, BsrError, KeyError, ValueError):
        return False


def _hist_of_file(path, sigma_max):
    from bsrdata.shards import read_blur

    edges = sigma_edges(sigma_max)
    hist = np.zeros(N_HIST, dtype=np.int64)
    for b in read_blur(path):
        hist += np.histogram(np.clip(b, 0, sigma_max), bins=edges)[0]
    return hist


# ------------------------------------------------------------------------------------------ build
def _int_option(name, value, low=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BsrError(f"{name}: expected an integer, got {value!r}")
    if low is not None and int(value) < low:
        raise BsrError(f"{name}: must be >= {low}, got {value}")
    return int(value)


def check_build_options(*, workers=1, shard_size=32, limit=None, shard="1/1", n_groups=5, seed=0):
    """Check the options of :func:`build_dataset` without touching anything; return ``(K, N)`` of ``shard``.

    workers, shard_size, n_groups: integers >= 1; limit: None or an integer >= 1; seed: any integer;
    shard: ``"K/N"``. BsrError (one line naming the option) otherwise."""
    check_workers(workers)
    _int_option("--shard-size", shard_size, 1)
    if limit is not None:
        _int_option("--limit", limit, 1)
    _int_option("n_groups", n_groups, 1)
    _int_option("--seed", seed)
    return parse_shard(shard)


def build_dataset(source, out_dir, cfg, seed: int = 0, workers: int = 1, shard_size: int = 32, limit=None,
                  shard="1/1", recipe=None, progress=None, *, with_depth: bool = False, n_groups: int = 5,
                  grouped=("test",), mp_context: str | None = None, source_files=None, status=None,
                  invariant_fraction=None, shard_format: int = DEFAULT_SHARD_FORMAT) -> dict:
    """Build ``source`` into ``out_dir`` and return the summary dict.

    Args:
        source: a source object (API.md). cfg: :class:`bsrdata.degrade.DegradeConfig`. seed: int.
        workers: processes, 1..4096 (1 = in this process); the pool is capped at the pending shards and
            at 4 x the CPU count (see :mod:`bsrdata.workers`). shard_size: renderings per shard.
        limit: keep only the first ``limit`` keys of every split. shard: ``"K/N"`` slice.
        recipe: dict stored in the manifest; without ``limit`` its ``expected`` counts are checked against
            the plan before anything is rendered (and again by verify).
        progress: ``callable(done, total)`` called as renderings finish (in this process).
        status: ``callable(text)`` for one-off notes before the work starts (the first run's compile).
        with_depth: also store the (cleaned) depth in metres.
        invariant_fraction: share of the ungrouped (train) splits' keys rendered invariant (default 1/5,
            :func:`bsrdata.plan.make_plan`); another value is recorded as the manifest's
            ``invariant_fraction`` (and in the recipe's deviations by the CLI).
        shard_format: 2 (default: Blosc, tiles, blur as codes on the CoC grid) or 1 (gzip, the first
            format); recorded as ``attrs["shard_format"]`` (format 2 only, so format 1 bytes are unchanged)
            in every shard and the manifest, and part of every shard's ``build_id``.

    Returns:
        summary: {"splits": {split: {"images", "renderings", "invariant", "shards"}}, "groups": {...},
        "sigma_hist": {"edges", "fraction"}, "seconds", "rendered_shards", "skipped_shards",
        "workers_peak_rss_mb": {pid: MB}, "workers": {"requested", "used", "pending_shards", "cpus"},
        "manifest": path}.
    """
    from bsrdata.degrade import DegradeConfig
    from bsrdata.plan import DEFAULT_INVARIANT_FRACTION, make_plan
    from bsrdata.plan import invariant_fraction as _frac

    t0 = time.time()
    if not isinstance(cfg, DegradeConfig):
        raise BsrError("cfg: expected a DegradeConfig")
    # every option is checked before the output folder is touched (a rejected rebuild keeps its manifest)
    workers = check_workers(workers)
    k_part, n_part = check_build_options(workers=workers, shard_size=shard_size, limit=limit, shard=shard,
                                         n_groups=n_groups, seed=seed)
    frac = _frac(invariant_fraction)
    out = check_out_dir(out_dir)
    splits = _splits_with_limit(source, limit)
    plan = make_plan(splits, seed, n_groups=n_groups, grouped=grouped, invariant_fraction=frac)
    if recipe is not None and limit is None:
        from bsrdata.recipes import check_counts

        counts = plan.counts()
        # with --invariant-fraction the recipe's invariant counts of the ungrouped splits do not apply
        skip = tuple(k for k in counts["splits"] if k not in grouped) if frac != DEFAULT_INVARIANT_FRACTION else ()
        check_counts(recipe, counts, skip_invariant=skip)
    labelled = {}
    for split, keys in splits.items():
        labelled[split] = source.load(keys[0]).seg is not None  # a split is labelled iff its first frame is
    jobs = plan_shards(plan, shard_size, labelled)
    attrs = cfg.to_attrs()
    attrs["num_classes"] = -1 if source.num_classes is None else int(source.num_classes)
    fields_for(shard_format)  # 1 or 2, else one line
    if shard_format != 1:
        attrs["shard_format"] = int(shard_format)
    src_name = getattr(source, "name", type(source).__name__)
    src_options = source.options() if hasattr(source, "options") else {}
    for j in jobs:
        j.build_id = _build_id(j, attrs, seed, src_name, with_depth, src_options)
    plan_id = hashlib.sha256(json.dumps([j.build_id for j in jobs]).encode()).hexdigest()
    # one writer per folder; the slices of one plan may share it (docs/pipeline.md, "Guarantees")
    share = None if n_part == 1 else (plan_id, f"{k_part}/{n_part}")
    with folder_lock(out, "build" if n_part == 1 else f"build --shard {k_part}/{n_part}", share=share):
        run = _BuildRun(source=source, out=out, cfg=cfg, seed=int(seed), workers=workers, shard_size=shard_size,
                        limit=limit, recipe=recipe, with_depth=bool(with_depth), k_part=k_part, n_part=n_part,
                        t0=t0, splits=splits, plan=plan, jobs=jobs, attrs=attrs, src_name=src_name,
                        src_options=src_options, plan_id=plan_id, source_files=source_files, frac=frac)
        return _build_locked(run, progress, status, mp_context)


@dataclasses.dataclass
class _BuildRun:
    """Everything one (slice of a) build decided before rendering: checked options, plan, shard jobs."""

    source: object
    out: str
    cfg: object
    seed: int
    workers: int
    shard_size: int
    limit: object
    recipe: object
    with_depth: bool
    k_part: int
    n_part: int
    t0: float
    splits: dict
    plan: object
    jobs: list
    attrs: dict
    src_name: str
    src_options: dict
    plan_id: str
    source_files: object
    frac: object

    @property
    def manifest_name(self) -> str:
        return NAME if self.n_part == 1 else part_manifest_name(self.k_part, self.n_part)

    @property
    def mine(self) -> list:
        """This slice's shard jobs."""
        return [j for j in self.jobs if j.index % self.n_part == self.k_part - 1]


def _build_locked(run, progress, status, mp_context):
    mpath = os.path.join(run.out, run.manifest_name)
    if os.path.exists(mpath):
        os.remove(mpath)  # a rebuild in progress must never look complete
    results, n_pool, n_todo = _render_pending(run, progress, status, mp_context)
    return _write_manifest(run, results, n_pool, n_todo)


def _render_pending(run, progress, status, mp_context):
    """Render this slice's shards that are not already on disk and whole -> ({job index: entry}, pool size,
    shards rendered)."""
    out, cfg, workers = run.out, run.cfg, run.workers
    mine = run.mine
    total = sum(len(j.items) for j in mine)

    done = [0]

    def tick(n):
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    results = {}
    todo = []
    for j in mine:
        path = os.path.join(out, j.path)
        if _existing_ok(path, j):
            results[j.index] = _entry(j, path, _hist_of_file(path, cfg.sigma_max), rendered=False)
            done[0] += len(j.items)  # shown with the first progress call below
        else:
            todo.append(j)
    ctx = {"source": run.source, "cfg": cfg, "seed": run.seed, "out": out, "with_depth": run.with_depth,
           "attrs": run.attrs}
    n_pool = pool_size(workers, len(todo))
    if todo:
        # compile (or load) the kernels here, before the progress bar starts its clock and before workers
        # fork (they inherit the compiled code); a first run says so, as compiling can take longer than a
        # small build
        from bsrdata.render.kernel_cache import cache_is_warm

        if status is not None and not cache_is_warm():
            status("compiling the renderer (first run; later runs load it from the cache)")
        _warm_up(cfg)
    if progress is not None:
        progress(done[0], total)
    if todo and workers == 1:
        _init_worker(dict(ctx, callback=tick))
        try:
            for j in todo:
                results[j.index] = _render_shard(j)
        finally:
            _W.clear()
    elif todo:
        _run_pool(todo, ctx, n_pool, results, tick, mp_context)
    return results, n_pool, len(todo)


def _write_manifest(run, results, n_pool, n_todo):
    """The slice's manifest (last, atomic) and build-log line from the rendered and reused shards ->
    the build summary."""
    from bsrdata import GENERATOR_VERSION
    from bsrdata.plan import DEFAULT_INVARIANT_FRACTION

    cfg, plan, jobs, splits, n_part = run.cfg, run.plan, run.jobs, run.splits, run.n_part
    mname = run.manifest_name
    mpath = os.path.join(run.out, mname)
    entries = [results[j.index] for j in run.mine]
    hist = np.sum([e["hist"] for e in entries], axis=0) if entries else np.zeros(N_HIST, np.int64)
    man_splits = {}
    for split in plan.items:
        sh = [e for e in entries if e["split"] == split]
        man_splits[split] = {
            "shards": [{k: e[k] for k in ("path", "count", "bytes", "sha256", "keys", "invariant")} for e in sh],
            "count": sum(e["count"] for e in sh),
            "images": len(splits[split]),
            "planned_shards": sum(1 for j in jobs if j.split == split),
            "planned_count": len(plan.items[split]),
        }
    where = {}
    for j in jobs:
        for i, (k, inv, _) in enumerate(j.items):
            where[(j.split, k, inv)] = (j.path, i)
    groups = {}
    for g, members in plan.groups.items():
        groups[str(g)] = [{"key": k, "invariant": bool(inv), "shard": where[(plan.test_split, k, inv)][0],
                           "index": where[(plan.test_split, k, inv)][1]} for k, inv in members]
    seconds = time.time() - run.t0
    counts = plan.counts()
    summary = {
        "splits": {s: dict(counts["splits"][s], shards=len(man_splits[s]["shards"]),
                           stored=man_splits[s]["count"]) for s in plan.items},
        "groups": counts["groups"],
        "sigma_hist": {"edges": [float(x) for x in sigma_edges(cfg.sigma_max)],
                       "fraction": [float(x) for x in (hist / max(1, hist.sum()))]},
        "seconds": seconds,
        "warnings": [w for w in [few_test_images_warning(plan, n_groups=len(plan.groups)), depth_outlier_warning(
            [kv for e in entries for kv in e.get("depth_outliers", ())],
            sum(1 for e in entries if e["rendered"] for _, inv, _ in _job_items(jobs, e) if not inv),
            cfg.depth_clip), conversion_note(entries)] if w],
        "rendered_shards": sum(1 for e in entries if e["rendered"]),
        "skipped_shards": sum(1 for e in entries if not e["rendered"]),
        "workers_peak_rss_mb": {str(e["pid"]): e["maxrss_mb"] for e in entries if e["rendered"]},
        "workers": {"requested": run.workers, "used": n_pool, "pending_shards": n_todo,
                    "cpus": os.cpu_count() or 1},
    }
    manifest = {
        "format": FORMAT,
        "generator_version": GENERATOR_VERSION,
        "recipe": run.recipe,
        "attrs": run.attrs,
        "source": {"name": run.src_name, "num_classes": run.source.num_classes, "files_sha256": run.source_files,
                   **({"options": run.src_options} if run.src_options else {})},
        "seed": run.seed,
        "limit": None if run.limit is None else int(run.limit),
        "with_depth": run.with_depth,
        "shard_size": int(run.shard_size),
        "part": None if n_part == 1 else f"{run.k_part}/{n_part}",
        "complete": n_part == 1,
        "splits": man_splits,
        "groups": groups,
        "plan_id": run.plan_id,
        # what depends on this run rather than on the dataset (times, resumed shards, workers) goes to the
        # build log, so two builds of the same dataset write byte-identical manifests
        "summary": {k: v for k, v in summary.items() if k not in RUN_ONLY},
    }
    if run.frac != DEFAULT_INVARIANT_FRACTION:  # only then, so default builds keep byte-identical manifests
        manifest["invariant_fraction"] = str(run.frac)
    if n_part > 1:  # the integer σ counts, so that merge computes the whole build's fractions exactly
        manifest["summary"]["sigma_hist"] = dict(summary["sigma_hist"], counts=[int(x) for x in hist])
    write_json_atomic(mpath, manifest)
    append_build_log(run.out, {"event": "build", "manifest": mname, **{k: summary[k] for k in RUN_ONLY}})
    summary["manifest"] = mpath
    return summary


RUN_ONLY = ("seconds", "rendered_shards", "skipped_shards", "workers_peak_rss_mb", "workers", "warnings")


def _job_items(jobs, entry):
    return next((j.items for j in jobs if j.path == entry["path"]), ())
BUILD_LOG = "build-log.jsonl"


def append_build_log(out, record: dict) -> str:
    """Append one JSON line (``record`` plus the UTC time ``finished``) to ``out/build-log.jsonl``; the
    run-dependent facts of a build or merge live there, not in the manifest."""
    path = os.path.join(os.fspath(out), BUILD_LOG)
    line = json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record},
                      default=float)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        raise BsrError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def _warm_up(cfg):
    """Run the configured renderer once on a tiny frame so numba compiles (or loads its cache) here, before
    the workers fork: they inherit the compiled code instead of each compiling it."""
    from bsrdata.degrade import synthesize
    from bsrdata.render import set_render_threads
    from bsrdata.sources.base import Record

    s = cfg.scale
    h = w = 4 * s
    z = np.ones((h, w), np.float32)
    z[:, w // 2:] = 3.0
    prev = set_render_threads(1)  # compile the one-thread paths the workers use, without starting a pool
    try:
        synthesize(Record("warm-up", np.zeros((h, w, 3), np.uint8), z, None), cfg, 0, False)
    except OSError as exc:  # numba cannot save the compiled kernels (a full disk)
        raise BsrError(f"{exc.filename or 'numba cache'}: cannot write ({exc.strerror or exc})") from None
    finally:
        set_render_threads(prev)


def _run_pool(todo, ctx, workers, results, tick, mp_context):
    # fork is safe even after this process started numba's OpenMP pool: the workers render with one thread
    # and so never enter it (a forked child that did would abort)
    method = mp_context or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    mctx = mp.get_context(method)
    q = mctx.Queue()
    ex = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mctx, initializer=_init_pool_worker,
                                initargs=(dict(ctx, queue=q), os.getpid(), _PDEATHSIG))
    futs = {}
    failed = True
    try:
        futs = {ex.submit(_render_shard, j): j for j in todo}
        pending = set(futs)
        while pending:
            finished, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            _drain(q, tick)
            for fut in finished:
                results[futs[fut].index] = fut.result()
        _drain(q, tick)
    except cf.process.BrokenProcessPool:
        failed = True
        raise BsrError("build: a worker process died; finished shards are kept, rerun the same command to "
                       "resume") from None
    except BaseException:
        failed = True
        raise
    else:
        failed = False
    finally:
        for fut in futs:
            fut.cancel()
        ex.shutdown(wait=True, cancel_futures=True)
        if not failed:  # a worker's last progress put may still be in its feeder thread until it exits
            _drain(q, tick)
        q.close()
        if failed:  # workers stopped mid-shard leave a .tmp<pid> of a shard this run owns: remove it
            for j in todo:
                remove_temps(os.path.join(ctx["out"], j.path))


def _drain(q, tick):
    while True:
        try:
            n = q.get_nowait()
        except (queue_mod.Empty, OSError, ValueError):
            return
        tick(n)


# ------------------------------------------------------------------------------------------ merge
def _find_part_manifests(part):
    part = os.fspath(part)
    if os.path.isfile(part):
        return [part]
    if not os.path.isdir(part):
        raise BsrError(f"{part}: no such folder or manifest")
    found = sorted(os.path.join(part, n) for n in os.listdir(part)
                   if re.fullmatch(r"manifest-part-\d+-of-\d+\.json", n))
    if not found:
        if os.path.isfile(os.path.join(part, NAME)):
            return [os.path.join(part, NAME)]
        raise BsrError(f"{part}: no part manifest (manifest-part-K-of-N.json) found")
    return found


def merge(out, parts) -> dict:
    """Join slices built with ``--shard K/N`` (folders or part manifest files) into one dataset at ``out``.

    Checks that every part comes from the same plan (seed, config, source, keys), that together they hold
    every planned shard, and that each shard file matches its part's sha256; copies (hard-links when
    possible) shard files into ``out`` and writes ``out/manifest.json`` last. Returns the manifest.
    """
    if not parts:
        raise BsrError("merge: no parts given")
    out = check_out_dir(out)
    with folder_lock(out, "merge"):
        return _merge_locked(out, parts)


def _merge_locked(out, parts) -> dict:
    mans = []
    for p in parts:
        for mp_ in _find_part_manifests(p):
            from bsrdata.manifest import load_json_manifest

            m = load_json_manifest(mp_).to_json()  # validated; merged below as JSON
            mans.append((os.path.dirname(os.path.abspath(mp_)), mp_, m))
    ref = mans[0][2]
    for _, mp_, m in mans[1:]:
        if m.get("plan_id") != ref.get("plan_id"):
            raise BsrError(f"{mp_}: comes from a different build (seed, config, source or keys differ)")
    final = os.path.join(out, NAME)
    if os.path.exists(final):
        os.remove(final)
    shards = {}
    for root, mp_, m in mans:
        for split, s in m["splits"].items():
            for sh in s["shards"]:
                if sh["path"] in shards:
                    continue
                src = shard_path(root, sh["path"])
                dst = os.path.join(out, sh["path"])
                if not os.path.isfile(src):
                    raise BsrError(f"{src}: shard listed in {os.path.basename(mp_)} is missing")
                if os.path.abspath(src) != os.path.abspath(dst):
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    tmp = tmp_name(dst)
                    if os.path.exists(tmp):
                        os.remove(tmp)
                    try:
                        try:
                            os.link(src, tmp)
                        except OSError:
                            shutil.copyfile(src, tmp)
                        os.replace(tmp, dst)
                    except OSError as exc:
                        raise BsrError(f"{dst}: cannot write ({exc.strerror or exc})") from None
                if sha256_file(dst) != sh["sha256"]:
                    raise BsrError(f"{src}: sha256 differs from {os.path.basename(mp_)} (corrupt shard)")
                shards[sh["path"]] = (split, sh)
    merged = dict(ref)
    merged["part"] = None
    merged["complete"] = True
    new_splits = {}
    for split, s in ref["splits"].items():
        lst = sorted((sh for sp, sh in shards.values() if sp == split), key=lambda sh: sh["path"])
        if len(lst) != s.get("planned_shards", len(lst)):
            raise BsrError(f"merge: split '{split}' has {len(lst)} of {s.get('planned_shards')} shards; "
                           "a part is missing")
        new_splits[split] = dict(s, shards=lst, count=sum(sh["count"] for sh in lst))
    merged["splits"] = new_splits
    counts = [m.get("summary", {}).get("sigma_hist", {}).get("counts") for _, _, m in mans]
    if all(c is not None and len(c) == N_HIST for c in counts):
        # exact: the fractions a one-machine build computes (then merged == whole build, byte for byte)
        hist = np.sum([np.asarray(c, dtype=np.int64) for c in counts], axis=0)
        tot = max(1, int(hist.sum()))
    else:  # parts written before the counts were recorded: fractions weighted by renderings
        hist = np.zeros(N_HIST)
        tot = 0.0
        for _, _, m in mans:
            sm = m.get("summary", {})
            fr = np.asarray(sm.get("sigma_hist", {}).get("fraction", np.zeros(N_HIST)), float)
            w = sum(sh.get("count", 0) for s in m["splits"].values() for sh in s["shards"])
            hist += fr * w
            tot += w
    summary = dict(ref.get("summary", {}))
    # per-split shard counts and the rendered/kept tallies are the parts' sums, not part 1's
    summary["splits"] = {s: dict((summary.get("splits") or {}).get(s, {}), shards=len(v["shards"]),
                                 stored=v["count"]) for s, v in new_splits.items()}
    for k in RUN_ONLY:
        summary.pop(k, None)  # older part manifests carried them
    sigma_hist = {k: v for k, v in summary.get("sigma_hist", {}).items() if k != "counts"}
    summary["sigma_hist"] = dict(sigma_hist, fraction=[float(x) for x in hist / max(tot, 1)])
    summary.pop("merged_parts", None)  # older merges recorded it here; it is a fact of the run (build log)
    merged["summary"] = summary
    write_manifest(out, merged)
    append_build_log(out, {"event": "merge", "manifest": NAME, "merged_parts": len(mans),
                           "parts": [mp_ for _, mp_, _ in mans]})
    return merged


__all__ = ["build_dataset", "merge", "parse_shard", "plan_shards", "ShardJob"]
