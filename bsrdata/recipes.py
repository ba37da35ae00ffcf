"""Release recipes: the versioned parameter sets behind "nyuv2-bsr 1.0" and "cityscapes-bsr 1.0".

A recipe is a JSON document (``manifests/<name>.json`` in the repository; the same files ship inside
the package as ``bsrdata/recipes_data/<name>.json`` so an installed package finds them)::

    {"name": "nyuv2-bsr", "version": "1.0", "dataset": "nyuv2" | "cityscapes" | ...,
     "seed": int,
     "degrade": {DegradeConfig fields: max_coc, scale, coc_step, renderer, downsample, noise, floor_colour},
     "source": {source options, e.g. border_px, disparity},
     "plan": {"test_split", "grouped", "n_groups"},
     "expected": {"splits": {split: n_images},          # Table 1
                  "invariant": {split: floor(n/5)},      # Table 1's IVA per split (per group for test)
                  "stored_invariant": {split: n},        # invariant renderings stored (5 folds for test)
                  "renderings": {split: n},              # renderings stored (test: n + 5·floor(n/5))
                  "groups": {"1": floor(n_test/5), ...}, # IVA members per group
                  "group_members": {"1": n_test, ...}, "hr_size": [H, W], "num_classes": C},
     "source_sha256": {file name: sha256 hex or null when not known}}

Helpers check a build against its recipe: :func:`expected_counts` (the Table 1 rule from split sizes),
:func:`check_counts` (against :meth:`bsrdata.plan.Plan.counts`), :func:`check_source_files` (sha256).
"""

from __future__ import annotations

import copy
import json
import os

from bsrdata.errors import BsrError
from bsrdata.manifest import sha256_file

_PKG = "bsrdata.recipes_data"
_REQUIRED = ("name", "version", "dataset", "seed", "degrade", "expected", "source_sha256")


def _data_dir():
    import importlib.resources

    return importlib.resources.files(_PKG)


def list_recipes():
    """Names of the recipes shipped with the package (e.g. ``["cityscapes-bsr-1.0", "nyuv2-bsr-1.0"]``)."""
    return sorted(p.name[:-5] for p in _data_dir().iterdir() if p.name.endswith(".json"))


def recipe_id(recipe):
    """``"<name>-<version>"``, e.g. ``"nyuv2-bsr-1.0"``."""
    return f"{recipe['name']}-{recipe['version']}"


def validate_recipe(recipe, where="recipe"):
    """Check the structure of a recipe dict; returns it. Raises BsrError("<where>: ...")."""
    if not isinstance(recipe, dict):
        raise BsrError(f"{where}: a recipe must be a JSON object")
    for k in _REQUIRED:
        if k not in recipe:
            raise BsrError(f"{where}: no {k!r}")
    seed = recipe["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BsrError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    if not isinstance(recipe["degrade"], dict):
        raise BsrError(f"{where}: degrade must be an object")
    import dataclasses

    from bsrdata.degrade import DegradeConfig

    names = {f.name for f in dataclasses.fields(DegradeConfig)}
    unknown = set(recipe["degrade"]) - names
    if unknown:
        raise BsrError(f"{where}: unknown degrade parameter(s) {sorted(unknown)}")
    try:
        DegradeConfig.from_dict(recipe["degrade"])
    except BsrError as exc:
        raise BsrError(f"{where}: degrade: {exc}") from None
    exp = recipe["expected"]
    if not isinstance(exp, dict) or not isinstance(exp.get("splits"), dict):
        raise BsrError(f"{where}: expected.splits must map split -> number of images")
    for split, n in exp["splits"].items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise BsrError(f"{where}: expected.splits.{split} must be a count, got {n!r}")
    sha = recipe["source_sha256"]
    if not isinstance(sha, dict):
        raise BsrError(f"{where}: source_sha256 must map file name -> sha256 or null")
    for fname, h in sha.items():
        if h is not None and (not isinstance(h, str) or len(h) != 64
                              or any(c not in "0123456789abcdef" for c in h.lower())):
            raise BsrError(f"{where}: source_sha256.{fname} is not a sha256 hex digest or null")
    return recipe


def load_recipe(name_or_path):
    """A recipe by name (``"nyuv2-bsr-1.0"``, shipped with the package) or by path to a JSON file.

    Returns a fresh dict (validated). Raises BsrError naming the recipe for an unknown name, a missing
    or unparsable file, or a malformed recipe."""
    s = os.fspath(name_or_path)
    if os.path.isfile(s):
        where = s
        try:
            with open(s, "rb") as fh:
                text = fh.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BsrError(f"{s}: cannot read recipe ({exc})") from None
    else:
        name = s[:-5] if s.endswith(".json") and os.sep not in s else s
        if os.sep in name or name not in list_recipes():
            if s.endswith(".json") or os.sep in s:
                raise BsrError(f"{s}: recipe file not found")
            raise BsrError(f"--recipe {s}: unknown recipe (known: {', '.join(list_recipes())})")
        where = f"{name}.json"
        text = (_data_dir() / f"{name}.json").read_text(encoding="utf-8")
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BsrError(f"{where}: not valid JSON ({exc})") from None
    return copy.deepcopy(validate_recipe(recipe, where))


def expected_counts(n_images, grouped=("test",), n_groups=5):
    """The Table 1 rule: counts for a dataset whose splits have ``n_images`` ({split: n}) images.

    Returns the recipe's ``expected`` block (without hr_size / num_classes): ⌊n/5⌋ invariant per split;
    a grouped split stores n variant + n_groups·⌊n/5⌋ invariant renderings and each group has ⌊n/5⌋
    invariant members out of n."""
    out = {"splits": {}, "invariant": {}, "stored_invariant": {}, "renderings": {}, "groups": {},
           "group_members": {}}
    for split, n in n_images.items():
        k = n // 5
        out["splits"][split] = n
        out["invariant"][split] = k
        if split in grouped:
            out["stored_invariant"][split] = n_groups * k
            out["renderings"][split] = n + n_groups * k
            for g in range(1, n_groups + 1):
                out["groups"][str(g)] = k
                out["group_members"][str(g)] = n
        else:
            out["stored_invariant"][split] = k
            out["renderings"][split] = n
    return out


def check_counts(recipe, plan_counts, skip_invariant=()):
    """Compare a plan's counts (:meth:`bsrdata.plan.Plan.counts`) with the recipe's expectations.

    ``skip_invariant``: splits whose invariant count is not compared (a build with ``--invariant-fraction``).

    Raises BsrError("<recipe id>: ...") on the first difference (e.g. a source with the wrong number of
    images); use it only for full builds (not ``--limit`` or partial ones)."""
    rid = recipe_id(recipe)
    exp = recipe["expected"]
    splits = plan_counts.get("splits", {})
    if set(splits) != set(exp["splits"]):
        raise BsrError(f"{rid}: splits {sorted(splits)} differ from the recipe's {sorted(exp['splits'])}")
    for split, c in splits.items():
        checks = (("images", exp["splits"]), ("renderings", exp.get("renderings", {})),
                  ("invariant", exp.get("stored_invariant", {})))
        for field, table in checks:
            if field == "invariant" and split in skip_invariant:
                continue
            if split in table and c.get(field) != table[split]:
                raise BsrError(f"{rid}: split {split} has {c.get(field)} {field}, the recipe expects {table[split]}")
    for g, c in plan_counts.get("groups", {}).items():
        if str(g) in exp.get("groups", {}) and c.get("invariant") != exp["groups"][str(g)]:
            raise BsrError(f"{rid}: group {g} has {c.get('invariant')} invariant members, "
                           f"the recipe expects {exp['groups'][str(g)]}")
        if str(g) in exp.get("group_members", {}) and c.get("members") != exp["group_members"][str(g)]:
            raise BsrError(f"{rid}: group {g} has {c.get('members')} members, "
                           f"the recipe expects {exp['group_members'][str(g)]}")


def check_source_files(recipe, paths):
    """Check source files against the recipe's ``source_sha256``.

    paths: {file name as in the recipe: path}. Files whose expected hash is null are hashed and reported
    but not checked. Returns {file name: actual sha256}. Raises BsrError("<path>: sha256 ... differs")."""
    out = {}
    for fname, path in paths.items():
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise BsrError(f"{path}: file not found")
        actual = sha256_file(path)
        out[fname] = actual
        want = recipe.get("source_sha256", {}).get(fname)
        if want is not None and want.lower() != actual:
            raise BsrError(f"{path}: sha256 {actual[:16]}… differs from {recipe_id(recipe)}'s {want[:16]}… "
                           "(a different or corrupted file)")
    return out


def with_deviations(recipe: dict, cfg, seed: int, limit=None, invariant_fraction=None) -> dict:
    """The recipe as recorded in a build's manifest: ``recipe`` plus its ``id`` and ``deviations``, the
    settings of this build that differ from it (``seed``, changed ``degrade`` keys, a ``limit``, an
    ``invariant_fraction`` other than 1/5 as text like ``"1"``), or None.

    ``cfg`` is the build's :class:`bsrdata.degrade.DegradeConfig`.
    """
    from bsrdata.degrade import DegradeConfig

    deviations = {}
    if seed != recipe["seed"]:
        deviations["seed"] = seed
    rcfg = DegradeConfig.from_dict(dict(recipe["degrade"]))
    if cfg != rcfg:
        deviations["degrade"] = {k: v for k, v in cfg.to_attrs().items() if rcfg.to_attrs().get(k) != v}
    if limit is not None:
        deviations["limit"] = limit
    if invariant_fraction is not None:
        from bsrdata.plan import DEFAULT_INVARIANT_FRACTION
        from bsrdata.plan import invariant_fraction as _frac

        f = _frac(invariant_fraction)
        if f != DEFAULT_INVARIANT_FRACTION:
            deviations["invariant_fraction"] = str(f)
    return dict(recipe, id=recipe_id(recipe), deviations=deviations or None)
