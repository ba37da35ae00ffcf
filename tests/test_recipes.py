import filecmp
import json
import os

import pytest

from bsrdata import recipes
from bsrdata.degrade import DegradeConfig
from bsrdata.errors import BsrError

ROOT = os.path.join(os.path.dirname(__file__), "..")

# Table 1 of the paper, spelled out (VA / IVA / total per split, and IVA per test group)
TABLE1 = {
    "nyuv2-bsr-1.0": {"splits": {"train": 795, "test": 654}, "iva": {"train": 159, "test": 130}, "max_coc": 21},
    "cityscapes-bsr-1.0": {"splits": {"train": 2975, "val": 500, "test": 1525},
                           "iva": {"train": 595, "val": 100, "test": 305}, "max_coc": 61},
}


def test_shipped_recipes_are_the_repo_manifests():
    assert recipes.list_recipes() == ["cityscapes-bsr-1.0", "nyuv2-bsr-1.0"]
    for name in recipes.list_recipes():
        repo = os.path.join(ROOT, "manifests", name + ".json")
        pkg = os.path.join(ROOT, "bsrdata", "recipes_data", name + ".json")
        assert filecmp.cmp(repo, pkg, shallow=False), f"{name}: manifests/ and bsrdata/recipes_data/ differ"


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_recipe_matches_table1(name):
    r = recipes.load_recipe(name)
    t = TABLE1[name]
    assert recipes.recipe_id(r) == name
    assert r["expected"]["splits"] == t["splits"]
    assert r["expected"]["invariant"] == t["iva"]
    assert r["expected"]["groups"] == {str(g): t["iva"]["test"] for g in range(1, 6)}
    assert r["expected"]["stored_invariant"]["test"] == 5 * t["iva"]["test"]
    # VA + IVA = total, as in the table
    for split, n in t["splits"].items():
        assert n - t["iva"][split] + t["iva"][split] == n and t["iva"][split] == n // 5
    cfg = DegradeConfig.from_dict(r["degrade"])
    assert (cfg.max_coc, cfg.scale, cfg.coc_step, cfg.renderer, cfg.downsample, cfg.noise) == \
        (t["max_coc"], 4, 0.1, "layered", "direct", 0.0)
    assert set(r["degrade"]) == {"max_coc", "scale", "coc_step", "renderer", "downsample", "noise", "floor_colour"}
    assert isinstance(r["seed"], int)
    assert all(v is None or len(v) == 64 for v in r["source_sha256"].values())
    # the rule reproduces the whole expected block
    exp = recipes.expected_counts(t["splits"])
    for k, v in exp.items():
        assert r["expected"][k] == v, k


def test_load_by_path_and_errors(tmp_path):
    r = recipes.load_recipe("nyuv2-bsr-1.0")
    p = tmp_path / "mine.json"
    r["seed"] = 7
    p.write_text(json.dumps(r))
    assert recipes.load_recipe(p)["seed"] == 7
    with pytest.raises(BsrError, match="nope-1.0.*unknown recipe"):
        recipes.load_recipe("nope-1.0")
    with pytest.raises(BsrError, match="gone.json"):
        recipes.load_recipe(tmp_path / "gone.json")
    p.write_text("{bad")
    with pytest.raises(BsrError, match="mine.json.*JSON"):
        recipes.load_recipe(p)
    r2 = dict(r, degrade=dict(r["degrade"], max_coc=20))
    p.write_text(json.dumps(r2))
    with pytest.raises(BsrError, match="mine.json.*max_coc"):
        recipes.load_recipe(p)
    r3 = dict(r, source_sha256={"a.mat": "abc"})
    p.write_text(json.dumps(r3))
    with pytest.raises(BsrError, match="a.mat"):
        recipes.load_recipe(p)
    del r["seed"]
    p.write_text(json.dumps(r))
    with pytest.raises(BsrError, match="seed"):
        recipes.load_recipe(p)


def test_load_returns_fresh_copy():
    a = recipes.load_recipe("nyuv2-bsr-1.0")
    a["expected"]["splits"]["train"] = 1
    assert recipes.load_recipe("nyuv2-bsr-1.0")["expected"]["splits"]["train"] == 795


def test_check_counts_against_plan():
    from bsrdata.plan import make_plan

    r = recipes.load_recipe("nyuv2-bsr-1.0")
    splits = {"train": [f"k{i}" for i in range(795)], "test": [f"t{i}" for i in range(654)]}
    plan = make_plan(splits, r["seed"])
    recipes.check_counts(r, plan.counts())
    bad = make_plan({"train": splits["train"], "test": splits["test"][:-5]}, r["seed"])
    with pytest.raises(BsrError, match="nyuv2-bsr-1.0.*test"):
        recipes.check_counts(r, bad.counts())


def test_check_source_files(tmp_path):
    p = tmp_path / "splits.mat"
    p.write_bytes(b"abc")
    import hashlib

    h = hashlib.sha256(b"abc").hexdigest()
    r = recipes.load_recipe("nyuv2-bsr-1.0")
    assert recipes.check_source_files(r, {"splits.mat": p}) == {"splits.mat": h}  # null: not checked
    r["source_sha256"]["splits.mat"] = h
    recipes.check_source_files(r, {"splits.mat": p})
    r["source_sha256"]["splits.mat"] = "0" * 64
    with pytest.raises(BsrError, match="splits.mat.*sha256"):
        recipes.check_source_files(r, {"splits.mat": p})


def test_with_deviations_records_what_differs():
    r = recipes.load_recipe("nyuv2-bsr-1.0")
    cfg = DegradeConfig.from_dict(dict(r["degrade"]))
    same = recipes.with_deviations(r, cfg, r["seed"])
    assert same["deviations"] is None and same["id"] == recipes.recipe_id(r)
    other = DegradeConfig.from_dict({**r["degrade"], "max_coc": r["degrade"]["max_coc"] + 2})
    dev = recipes.with_deviations(r, other, r["seed"] + 1, limit=7)["deviations"]
    assert dev == {"seed": r["seed"] + 1, "degrade": {"max_coc": r["degrade"]["max_coc"] + 2,
                                                  "sigma_max": (r["degrade"]["max_coc"] + 1) / 4}, "limit": 7}
