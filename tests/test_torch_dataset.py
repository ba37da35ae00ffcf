import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bsrdata.dataset import BSRDataset, collate
from bsrdata.errors import BsrError
from bsrdata.shards import write_dataset

ATTRS = {"scale": 4, "max_coc": 21, "sigma_max": 5.0, "renderer": "gather", "downsample": "direct",
         "noise": 0.0, "generator_version": "test"}


def make_coord_dataset(root, n=4, h=32, w=48, labels=True, sigma=None):
    """HR encodes coordinates (R = x, G = y, B = sample), LR = HR[::4, ::4], blur = x/10 (or constant)."""
    yy, xx = np.mgrid[0:h, 0:w]
    samples = []
    for i in range(n):
        hr = np.stack([xx, yy, np.full_like(xx, i)], -1).astype(np.uint8)
        blur = (xx / 10.0 if sigma is None else np.full((h, w), sigma)).astype(np.float32)
        seg = ((xx // 4 + yy // 4) % 3).astype(np.uint8) if labels else None
        samples.append({"key": f"k{i}", "hr": hr, "lr": np.ascontiguousarray(hr[::4, ::4]), "blur": blur,
                        "seg": seg, "invariant": i == 0})
    write_dataset(root, {"train": samples}, attrs=ATTRS)
    return root


def test_full_items_types_and_values(tmp_path):
    ds = BSRDataset(make_coord_dataset(str(tmp_path)), "train")
    it = ds[2]
    assert it["lr"].shape == (3, 8, 12) and it["hr"].shape == (3, 32, 48)
    assert it["blur"].shape == (1, 32, 48) and it["seg"].shape == (32, 48)
    assert it["lr"].dtype == torch.float32 and it["seg"].dtype == torch.int64
    assert it["key"] == "k2" and it["invariant"] is False
    assert torch.isclose(it["hr"][0, 5, 7], torch.tensor(7 / 255.0))
    assert torch.isclose(it["blur"][0, 0, 7], torch.tensor(0.7))
    assert ds.has_labels and ds.sigma_max == 5.0


@pytest.mark.parametrize("hflip", [False, True])
def test_crops_stay_aligned(tmp_path, hflip):
    ds = BSRDataset(make_coord_dataset(str(tmp_path)), "train", crop=(16, 24), hflip=hflip, seed=3)
    flips = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            it = ds[i]
            hr = (it["hr"] * 255).round().long()
            lr = (it["lr"] * 255).round().long()
            assert hr.shape == (3, 16, 24) and lr.shape == (3, 4, 6)
            flipped = bool(hr[0, 0, 1] < hr[0, 0, 0])
            # `direct` LR pixel i is HR pixel 4i, also after a flip (the HR side is re-registered)
            assert torch.equal(lr, hr[:, ::4, ::4])
            x = hr[0].double()
            assert torch.allclose(it["blur"][0].double(), x / 10.0, atol=1e-6)
            y = hr[1]
            valid = slice(0, -3) if flipped else slice(None)  # the 3 re-registration columns are ignored
            assert torch.equal(it["seg"][:, valid], ((x.long() // 4 + y // 4) % 3)[:, valid])
            if flipped:
                assert (it["seg"][:, -3:] == 255).all()
                # mirrored: HR x decreases by one per column, and LR pixel j is HR column 4j's x
                assert torch.equal(x[0, :-4] - x[0, 1:-3], torch.ones(20, dtype=x.dtype))
            assert y[0, 0] % 4 == 0
            flips += int(flipped)
    assert (flips > 0) == hflip


def test_determinism_and_epochs(tmp_path):
    root = make_coord_dataset(str(tmp_path))
    a = BSRDataset(root, "train", crop=16, hflip=True, zoom=(1, 1.5), seed=1)
    b = BSRDataset(root, "train", crop=16, hflip=True, zoom=(1, 1.5), seed=1)
    assert all(torch.equal(a[i]["hr"], b[i]["hr"]) for i in range(4))
    before = [a[i]["hr"] for i in range(4)]
    a.set_epoch(1)
    assert not all(torch.equal(a[i]["hr"], before[i]) for i in range(4))


@pytest.mark.parametrize("rule,expect", [("physical", 2.0 * 1.5), ("paper", 2.0 / 1.5)])
def test_zoom_scales_sigma(tmp_path, rule, expect):
    ds = BSRDataset(make_coord_dataset(str(tmp_path), sigma=2.0), "train", crop=(24, 36), zoom=(1.5,),
                    zoom_rule=rule)
    it = ds[1]
    assert it["hr"].shape == (3, 24, 36) and it["lr"].shape == (3, 6, 9)
    assert torch.allclose(it["blur"], torch.full_like(it["blur"], expect), atol=1e-5)
    # content is enlarged: an HR crop 36 px wide spans 36 / 1.5 = 24 source pixels
    xs = it["hr"][0] * 255
    assert 21 <= float(xs[:, -1].mean() - xs[:, 0].mean()) <= 24


def test_no_labels_and_bad_options(tmp_path):
    root = make_coord_dataset(str(tmp_path), labels=False)
    ds = BSRDataset(root, "train")
    assert not ds.has_labels and int(ds[0]["seg"].min()) == 255
    with pytest.raises(BsrError, match="crop"):
        BSRDataset(root, "train", crop=(18, 24))
    with pytest.raises(BsrError, match="larger"):
        BSRDataset(root, "train", crop=(64, 64))[0]
    with pytest.raises(BsrError, match="zoom_rule"):
        BSRDataset(root, "train", zoom_rule="divide")
    with pytest.raises(BsrError, match="zoom"):
        BSRDataset(root, "train", zoom=(0.5,))
    with pytest.raises(BsrError):
        BSRDataset(root, "val")


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_workers_match_main_process(tmp_path, ctx):
    ds = BSRDataset(make_coord_dataset(str(tmp_path), n=6), "train", crop=16, hflip=True, zoom=(1, 1.2), seed=5)
    ref = collate([ds[i] for i in range(len(ds))])
    ds[0]  # files already open in the parent: workers must reopen their own
    dl = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate, multiprocessing_context=ctx)
    batches = list(dl)
    got = {k: torch.cat([b[k] for b in batches]) for k in ("lr", "hr", "blur", "seg")}
    for k in got:
        assert torch.equal(got[k], ref[k]), k
    assert sum((b["key"] for b in batches), []) == ref["key"]


def test_dihedral_fill_sets_the_moved_in_columns():
    """The one grid-aware flip: on an item, hflip moves HR maps back by s - 1; ``fill`` marks the moved-in
    columns (the dataset's labels there are 255, no loss), other keys repeat the edge."""
    from bsrdata.dataset import dihedral

    s = 4
    hr = torch.arange(2 * 8 * 12, dtype=torch.float32).reshape(2, 8, 12)
    seg = torch.arange(8 * 12).reshape(8, 12)
    item = {"lr": torch.zeros(2, 2, 3), "hr": hr, "seg": seg}
    out, mask = dihedral(item, False, True, False, s, True, fill={"seg": 255})
    d = s - 1
    ref = hr.flip(-1)
    assert torch.equal(out["hr"][..., :-d], ref[..., d:])
    assert torch.equal(out["hr"][..., -d:], ref[..., -1:].expand(-1, -1, d))
    assert torch.equal(out["seg"][:, :-d], seg.flip(-1)[:, d:]) and bool((out["seg"][:, -d:] == 255).all())
    assert bool((mask[..., -d:] == 0).all()) and bool((mask[..., :-d] == 1).all())
    assert torch.equal(seg, torch.arange(8 * 12).reshape(8, 12))  # the input is not modified
