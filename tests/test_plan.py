"""bsrdata.plan: Table 1 counts, disjoint test folds, groups referencing stored renderings."""

import pytest

from bsrdata.errors import BsrError
from bsrdata.plan import make_plan


def _keys(prefix, n):
    return [f"{prefix}-{i:04d}" for i in range(n)]


def test_nyuv2_counts():
    splits = {"train": _keys("tr", 795), "test": _keys("te", 654)}
    p = make_plan(splits, 2024)
    tr = p.items["train"]
    assert len(tr) == 795 and sum(i for _, i in tr) == 159
    assert [k for k, _ in tr] == splits["train"]
    te = p.items["test"]
    assert len(te) == 654 + 5 * 130
    assert sum(1 for _, i in te if not i) == 654  # every test image's variant rendering stored once
    assert sorted(p.groups) == [1, 2, 3, 4, 5]
    folds = []
    for g in range(1, 6):
        m = p.groups[g]
        assert [k for k, _ in m] == splits["test"]  # every image once, in split order
        inv = {k for k, i in m if i}
        assert len(inv) == 130
        assert all(p.fold["test"][k] == g for k in inv)
        assert all(p.render_group("test", k, True) == g for k in inv)
        folds.append(inv)
    for a in range(5):
        for b in range(a + 1, 5):
            assert not folds[a] & folds[b]
    stored_inv = {k for k, i in te if i}
    assert stored_inv == set().union(*folds)
    assert len(set(splits["test"]) - stored_inv) == 654 - 650
    c = p.counts()
    assert c["splits"]["test"] == {"images": 654, "renderings": 1304, "invariant": 650}
    assert c["groups"]["3"] == {"members": 654, "invariant": 130}


def test_cityscapes_counts_val_ungrouped():
    p = make_plan({"train": _keys("a", 2975), "val": _keys("b", 500), "test": _keys("c", 1525)}, 0)
    assert sum(i for _, i in p.items["train"]) == 595
    assert len(p.items["val"]) == 500 and sum(i for _, i in p.items["val"]) == 100
    assert p.render_group("val", p.items["val"][0][0], True) == 0
    assert all(sum(i for _, i in p.groups[g]) == 305 for g in range(1, 6))


def test_deterministic_and_seeded():
    s = {"train": _keys("t", 50), "test": _keys("e", 23)}
    a, b, c = make_plan(s, 1), make_plan(s, 1), make_plan(s, 2)
    assert a.items == b.items and a.groups == b.groups
    assert a.items != c.items or a.groups != c.groups


def test_small_and_bad():
    p = make_plan({"test": _keys("e", 4)}, 0)
    assert p.items["test"] == [(k, False) for k in _keys("e", 4)]
    assert all(not any(i for _, i in m) for m in p.groups.values())
    with pytest.raises(BsrError, match="appears"):
        make_plan({"train": ["a", "b"], "test": ["b"]}, 0)
    with pytest.raises(BsrError, match="n_groups"):
        make_plan({"test": ["a"]}, 0, n_groups=0)
