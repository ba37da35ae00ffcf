"""The typed manifest: every corrupted field is one BsrError line naming the file and the field path,
through ``bsr verify`` (exit 1) and ``open_dataset``; a manifest read and written again is byte-identical."""

import copy
import json
import shutil

import pytest

import bsrdata
from bsrdata.build import build_dataset
from bsrdata.cli.main import main
from bsrdata.degrade import DegradeConfig
from bsrdata.errors import BsrError
from bsrdata.manifest import ABSENT, Manifest, load_manifest
from bsrdata.sources.synthetic import SyntheticSource


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("m") / "ds"
    build_dataset(SyntheticSource(n_train=5, n_test=6, size=(32, 48), seed=1), root,
                  DegradeConfig(renderer="gather"), seed=2, shard_size=4)
    return root


def _set(path, value):
    def f(m):
        obj = m
        for k in path[:-1]:
            obj = obj[k]
        if value is KeyError:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
    return f


CASES = [
    ("format", lambda m: m.update(format="other/1"), "not a bsrdata-manifest/1 manifest"),
    ("not-object", lambda m: (m.clear(), m.update(format=["x"])), "not a bsrdata-manifest/1 manifest"),
    ("attrs-missing", _set(["attrs"], KeyError), ": attrs: missing"),
    ("attrs-list", _set(["attrs"], []), "attrs: expected an object, got a list"),
    ("splits-list", _set(["splits"], [1]), "splits: expected an object, got a list"),
    ("count-str", _set(["splits", "test", "count"], "11"), "splits.test.count: expected an integer, got a string"),
    ("count-bool", _set(["splits", "test", "count"], True), "splits.test.count: expected an integer"),
    ("shards-dict", _set(["splits", "test", "shards"], {"a": 1}), "splits.test.shards: expected a list"),
    ("shard-str", _set(["splits", "test", "shards", 0], "x"), "splits.test.shards[0]: expected an object"),
    ("keys-missing", _set(["splits", "test", "shards", 0, "keys"], KeyError), "splits.test.shards[0].keys: missing"),
    ("key-int", _set(["splits", "test", "shards", 1, "keys", 0], 3),
     "splits.test.shards[1].keys[0]: expected a string"),
    ("inv-int", _set(["splits", "train", "shards", 0, "invariant", 1], 1),
     "splits.train.shards[0].invariant[1]: expected true or false"),
    ("count-neg", _set(["splits", "test", "shards", 0, "count"], -1), "splits.test.shards[0].count: -1 is below 0"),
    ("count-keys", _set(["splits", "test", "shards", 0, "count"], 3), "splits.test.shards[0].keys: shard"),
    ("bytes-str", _set(["splits", "test", "shards", 0, "bytes"], "12"),
     "splits.test.shards[0].bytes: expected an integer"),
    ("path-escape", _set(["splits", "train", "shards", 0, "path"], "../x.h5"), "escapes the dataset folder"),
    ("seed-str", _set(["seed"], "2"), ": seed: expected an integer"),
    ("part-bad", _set(["part"], "3/2"), ": part: expected 'K/N'"),
    ("complete-str", _set(["complete"], "yes"), ": complete: expected true or false"),
    ("classes-str", _set(["source", "num_classes"], "8"), "source.num_classes: expected an integer"),
    ("groups-list", _set(["groups"], []), "groups: expected an object, got a list"),
    ("group-dict", _set(["groups", "1"], {}), "groups.1: expected a list, got an object"),
    ("member-str", _set(["groups", "1", 0], "x"), "groups.1[0]: expected an object"),
    ("member-nokey", _set(["groups", "2", 3, "key"], KeyError), "groups.2[3].key: missing"),
    ("member-inv", _set(["groups", "1", 2, "invariant"], "no"), "groups.1[2].invariant: expected true or false"),
    ("member-index-str", _set(["groups", "1", 3, "index"], "1"), "groups.1[3].index: expected an integer"),
    ("member-index-range", _set(["groups", "1", 0, "index"], 7),
     "groups.1[0].index: 7 is out of range (shard test/test-00000.h5 has 4 samples)"),
    ("member-index-neg", _set(["groups", "3", 0, "index"], -1), "groups.3[0].index: -1 is out of range"),
    ("member-shard", _set(["groups", "4", 1, "shard"], "test/test-00009.h5"),
     "groups.4[1].shard: 'test/test-00009.h5' is not a shard listed in the splits"),
]


@pytest.mark.parametrize("name, corrupt, msg", CASES, ids=[c[0] for c in CASES])
def test_corrupted_manifest_is_one_line(built, tmp_path, capsys, name, corrupt, msg):
    ds = tmp_path / "ds"
    shutil.copytree(built, ds)
    mpath = ds / "manifest.json"
    m = json.loads(mpath.read_text())
    corrupt(m)
    mpath.write_text(json.dumps(m))
    with pytest.raises(BsrError) as e:
        bsrdata.open_dataset(ds, "test")
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{mpath}: ") and msg in text, text
    with pytest.raises(SystemExit) as ex:
        main(["verify", str(ds), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 1 and len(err) == 1, err
    assert err[0].startswith("bsr: error: ") and msg in err[0] and str(mpath) in err[0], err


def test_round_trip_is_byte_identical(built):
    raw = (built / "manifest.json").read_text()
    x = json.loads(raw)
    m = Manifest.from_json(copy.deepcopy(x), "manifest.json")
    assert m.to_json() == x
    assert json.dumps(m.to_json(), indent=1) + "\n" == raw
    assert Manifest.from_json(m.to_json()) == m


def test_typed_fields(built):
    m = load_manifest(built)
    assert m.is_complete and m.num_classes is None or isinstance(m.num_classes, int)
    test = m.splits["test"]
    assert test.count == sum(sh.count for sh in test.shards) and isinstance(test.shards[0].keys, tuple)
    g1 = m.groups["1"]
    assert all(0 <= e.index < m.shard(e.shard).count for e in g1)
    assert m.splits["test"].shards[0].bytes is not ABSENT


def test_optional_keys_stay_absent():
    x = {"format": "bsrdata-manifest/1", "attrs": {"scale": 4, "max_coc": 21, "sigma_max": 5.0},
         "splits": {"t": {"count": 0, "shards": []}},
         "groups": {}, "custom": [1]}
    m = Manifest.from_json(x, "m.json")
    assert m.seed is ABSENT and m.to_json() == x and list(m.to_json()["splits"]["t"]) == ["count", "shards"]
