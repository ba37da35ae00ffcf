"""--invariant-fraction: the share of training keys rendered space-invariant (paper Table 4's all-invariant
training set), default 1/5, recorded in the manifest and the recipe's deviations."""

import json
import os
from fractions import Fraction

import pytest

from bsrdata import recipes
from bsrdata.build import build_dataset
from bsrdata.degrade import DegradeConfig
from bsrdata.errors import BsrError
from bsrdata.plan import invariant_fraction, make_plan
from bsrdata.sources.synthetic import SyntheticSource
from bsrdata.verify import verify_dataset


def _splits(n_train, n_test=10):
    return {"train": [f"tr{i}" for i in range(n_train)], "test": [f"te{i}" for i in range(n_test)]}


@pytest.mark.parametrize("n", [0, 1, 4, 5, 9, 10, 11, 795, 2975])
def test_default_is_the_old_fifth_and_extremes(n):
    base = make_plan(_splits(n), 7)
    assert sum(inv for _, inv in base.items["train"]) == n // 5
    assert make_plan(_splits(n), 7, invariant_fraction="1/5").items == base.items
    assert make_plan(_splits(n), 7, invariant_fraction=0.2).items == base.items
    every = make_plan(_splits(n), 7, invariant_fraction=1)
    assert all(inv for _, inv in every.items["train"])
    assert not any(inv for _, inv in make_plan(_splits(n), 7, invariant_fraction=0).items["train"])
    half = make_plan(_splits(n), 7, invariant_fraction=0.5)
    assert sum(inv for _, inv in half.items["train"]) == n // 2
    # the test groups do not depend on the training fraction
    assert every.groups == base.groups and half.items["test"] == base.items["test"]


def test_parse():
    assert invariant_fraction(None) == Fraction(1, 5)
    assert invariant_fraction("1/3") == Fraction(1, 3)
    for bad in ("x", "1.5", "-0.1", "1/0"):
        with pytest.raises(BsrError, match="--invariant-fraction"):
            invariant_fraction(bad)


def test_build_records_it(tmp_path):
    src = lambda: SyntheticSource(n_train=5, n_test=5, size=(32, 48), seed=3)  # noqa: E731
    cfg = DegradeConfig(renderer="gather")
    build_dataset(src(), tmp_path / "a", cfg, seed=1, shard_size=8)
    build_dataset(src(), tmp_path / "b", cfg, seed=1, shard_size=8, invariant_fraction=1)
    ma = json.load(open(os.path.join(tmp_path / "a", "manifest.json")))
    mb = json.load(open(os.path.join(tmp_path / "b", "manifest.json")))
    assert "invariant_fraction" not in ma and mb["invariant_fraction"] == "1"
    assert sum(sum(sh["invariant"]) for sh in ma["splits"]["train"]["shards"]) == 1
    assert all(all(sh["invariant"]) for sh in mb["splits"]["train"]["shards"])
    assert ma["groups"] == mb["groups"]
    assert verify_dataset(tmp_path / "b", full=True)["problems"] == []


def test_recipe_deviation():
    r = recipes.load_recipe("nyuv2-bsr-1.0")
    cfg = DegradeConfig.from_dict(dict(r["degrade"]))
    assert recipes.with_deviations(r, cfg, r["seed"], invariant_fraction=Fraction(1, 5))["deviations"] is None
    dev = recipes.with_deviations(r, cfg, r["seed"], invariant_fraction=1)["deviations"]
    assert dev == {"invariant_fraction": "1"}


def test_verify_against_a_recipe_ignores_only_the_training_iva_count(tmp_path):
    src = SyntheticSource(n_train=5, n_test=5, size=(32, 48), seed=3)
    build_dataset(src, tmp_path / "b", DegradeConfig(renderer="gather"), seed=1, shard_size=8, invariant_fraction=1)
    mp = os.path.join(tmp_path / "b", "manifest.json")
    m = json.load(open(mp))
    # a recipe expecting the default plan: 5 train images of which 1 IVA
    m["recipe"] = {"name": "toy", "version": "1", "seed": 1, "plan": {"grouped": ["test"]},
                   "expected": {"splits": {"train": 5, "test": 5}, "stored_invariant": {"train": 1, "test": 5}}}
    json.dump(m, open(mp, "w"))
    assert verify_dataset(tmp_path / "b")["problems"] == []
    del m["invariant_fraction"]
    json.dump(m, open(mp, "w"))
    assert any("invariant" in p for p in verify_dataset(tmp_path / "b")["problems"])
