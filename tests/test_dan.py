"""DAN v1 / v2 (bsrdata.models.dan): official parameter counts, the DPCG doubling quirk, the stop-gradient
structure, the kernel targets against numpy, the converter on synthetic official state dicts, and a tiny
``bsr train dan`` + ``bsr bench --method dan`` run on the fakes."""

import json
import re

import numpy as np
import pytest
import torch
from sr_fakes import make_bench_dataset

from bsrdata.errors import BsrError
from bsrdata.models import create_model
from bsrdata.models.dan import DPCG, shift_image
from bsrdata.models.engine.task_dan import DANTask, kernel_target

TINY = {"nf": 8, "nb": 2, "est_nf": 8, "est_blocks": 1, "kernel_size": 7, "code_len": 4, "loops": 3,
        "pca_sigma_max": 2.0}


def _count(m):
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------ counts
@pytest.mark.parametrize("name,total,restorer,estimator,tensors", [
    ("dan_v1", 4_329_511, 4_040_915, 288_596, 379),
    ("dan_v2", 4_707_708, 4_445_379, 262_329, 463),
])
def test_official_parameter_counts(name, total, restorer, estimator, tensors):
    torch.manual_seed(0)
    m = create_model(name)  # official x4 setting 1: nf 64, code 10, kernel 21 (v1 nb 40; v2 nb 10, ng 5)
    assert (_count(m), _count(m.restorer), _count(m.estimator)) == (total, restorer, estimator)
    assert len(m.state_dict()) == tensors
    assert tuple(m.encoder.shape) == (1, 441, 10) and tuple(m.init_kernel.shape) == (1, 21, 21)
    assert tuple(m.init_ker_map.shape) == (1, 10)


def test_per_module_counts_v1_v2():
    v1, v2 = create_model("dan_v1"), create_model("dan_v2")
    r1, e1, r2, e2 = v1.restorer, v1.estimator, v2.restorer, v2.estimator
    assert (_count(r1.head), _count(r1.blocks), _count(r1.fusion), _count(r1.up)) == (1792, 3_705_040, 36_928,
                                                                                       297_155)
    assert (_count(e1.head_lr), _count(e1.head_sr), _count(e1.blocks), _count(e1.out)) == (128, 7808, 277_770, 2890)
    assert (_count(r2.head_lr), _count(r2.head_code), _count(r2.groups)) == (1792, 704, 4_108_800)
    assert (_count(e2.head_lr), _count(e2.head_sr), _count(e2.group)) == (2432, 27_776, 184_960)
    assert _count(e2.tail_conv) + _count(e2.tail_fc) == 47_161


# ------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("name", ["dan_v1", "dan_v2"])
def test_tiny_forward_shapes_and_super_resolve(name):
    torch.manual_seed(0)
    kw = {**TINY, **({"ng": 2} if name == "dan_v2" else {})}
    m = create_model(name, **kw).eval()
    lr = torch.rand(2, 3, 6, 9)
    with torch.no_grad():
        out = m(lr)
    assert out["sr"].shape == (2, 3, 24, 36) and out["sr_all"].shape == (3, 2, 3, 24, 36)
    assert out["code"].shape == (2, 4) and out["code_all"].shape == (3, 2, 4)
    assert torch.equal(out["sr_all"][-1], out["sr"])
    if name == "dan_v2":
        k = out["kernel_all"]
        assert k.shape == (3, 2, 7, 7) and torch.allclose(k.sum((-2, -1)), torch.ones(3, 2), atol=1e-5)
        assert (k > 0).all()
        # code_t = E^T vec(k_t), no mean subtraction
        e = m.encoder[0].double().numpy()
        np.testing.assert_allclose(out["code"].double().numpy(), k[-1].reshape(2, -1).double().numpy() @ e,
                                   atol=1e-5)
    y = m.super_resolve(lr)
    assert y.shape == (2, 3, 24, 36) and y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, out["sr"].clamp(0, 1))


def test_initial_code_is_the_centred_delta_projected():
    m = create_model("dan_v1", **TINY)
    from bsrdata.models.kernels import gaussian_pca_basis

    e = gaussian_pca_basis(2.0, 7, 4).float()
    assert torch.allclose(m.encoder[0], e)
    assert torch.allclose(m.init_ker_map[0], e[24])  # row of the centre tap (3, 3) of a 7x7 kernel
    # the first loop's Restorer sees that code: SR_1 = R(LR, code_0)
    lr = torch.rand(1, 3, 5, 5)
    with torch.no_grad():
        assert torch.equal(m(lr)["sr_all"][0], m.restorer(lr, m.init_ker_map))


# ------------------------------------------------------------------------------------------ DPCG quirk
def test_dpcg_doubles_its_output_hand_case():
    g = DPCG(1, 1, 1, 1, 1)
    blk = g.blocks[0]
    with torch.no_grad():
        for conv, (w, b) in zip((blk.a1, blk.a2, blk.b1, blk.b2), ((2.0, 0.0), (1.0, 0.5), (-1.0, 0.0), (3.0, 0.0))):
            conv.weight.fill_(w)
            conv.bias.fill_(b)
    x0, x1 = torch.full((1, 1, 1, 1), 1.0), torch.full((1, 1, 1, 1), 2.0)
    y0, y1 = g(x0, x1)
    # f1 = 1·LReLU(2·1) + 0.5 = 2.5; f2 = 3·LReLU(−1·2) = −1.2; block: (1 + 2.5·(−1.2), 2 − 1.2) = (−2, 0.8)
    # the official group skip adds the (overwritten) input back: 2·(−2, 0.8); an intended y + x would be (−1, 2.8)
    assert y0.item() == pytest.approx(-4.0) and y1.item() == pytest.approx(1.6)


# ------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("name", ["dan_v1", "dan_v2"])
def test_stop_gradients(name):
    torch.manual_seed(0)
    m = create_model(name, **{**TINY, **({"ng": 2} if name == "dan_v2" else {})})
    lr = torch.rand(2, 3, 6, 6)

    def grads(loss):
        m.zero_grad(set_to_none=True)
        loss.backward()
        return ({n: p.grad for n, p in m.restorer.named_parameters()},
                {n: p.grad for n, p in m.estimator.named_parameters()})

    out = m(lr)
    r, e = grads(out["sr_all"].abs().mean())  # every loop's SR: none reaches the estimator
    assert all(g is None for g in e.values()) and all(g is not None and g.abs().sum() > 0 for g in r.values())
    out = m(lr)
    key = "code_all" if name == "dan_v1" else "kernel_all"
    r, e = grads(out[key].square().mean())  # every loop's kernel estimate: none reaches the restorer
    assert all(g is None for g in r.values()) and all(g is not None for g in e.values())


def test_training_loss_supervises_only_the_last_loop():
    torch.manual_seed(0)
    task = DANTask()
    cfg = task.config({"model": {"name": "dan_v1", **TINY}, "data": {"hflip": False, "rot90": False}})
    m = task.build_model({**cfg, "model": {**cfg["model"], "nb": 2}})
    batch = {"lr": torch.rand(2, 3, 4, 4), "hr": torch.rand(2, 3, 16, 16), "blur": torch.rand(2, 1, 16, 16) * 2}
    loss, parts = task.training_step(m, batch, cfg)
    out = m(batch["lr"])
    k = kernel_target(batch["blur"], 7)
    want = (out["sr"] - batch["hr"]).abs().mean() + (out["code"] - m.encode(k)).abs().mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert set(parts) == {"l1", "kernel_l1"}


# ------------------------------------------------------------------------------------------ targets
def _np_gauss(sigma, size):
    r = size // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    if sigma < 1e-6:
        g = (x == 0).astype(np.float64)
    else:
        g = np.exp(-x ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    return np.outer(g, g)


def test_kernel_target_mean_against_numpy():
    rng = np.random.default_rng(0)
    sig = np.round(rng.uniform(0, 3, (2, 6, 5)), 1)
    sig[0, 0, :] = 0.0
    want = np.stack([np.mean([_np_gauss(s, 9) for s in sig[i].ravel()], axis=0) for i in range(2)])
    got = kernel_target(torch.from_numpy(sig)[:, None].float(), 9, "mean").double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    # the same as the shared helper (over the distinct values, 2-D kernels)
    from bsrdata.models.kernels import mean_kernel

    np.testing.assert_allclose(got, mean_kernel(torch.from_numpy(sig).float(), 9).double().numpy(), atol=1e-6)
    # a mask (the rows a grid-aware flip moved in) excludes pixels
    mask = torch.ones(1, 1, 6, 5)
    mask[..., -1:, :] = 0
    want_m = np.mean([_np_gauss(s, 9) for s in sig[1, :-1].ravel()], axis=0)
    got_m = kernel_target(torch.from_numpy(sig)[:, None].float(), 9, "mean", mask)[1].double().numpy()
    np.testing.assert_allclose(got_m, want_m, atol=1e-6)


def test_kernel_target_sigma_modes_against_numpy():
    sig = np.array([[[0.5, 1.0, 2.0, 3.5]]], np.float32)
    med = kernel_target(torch.from_numpy(sig)[:, None], 11, "median_sigma")[0].double().numpy()
    np.testing.assert_allclose(med, _np_gauss(float(np.median(sig)), 11), atol=1e-6)
    mean = kernel_target(torch.from_numpy(sig)[:, None], 11, "mean_sigma")[0].double().numpy()
    np.testing.assert_allclose(mean, _np_gauss(float(np.mean(sig.astype(np.float64))), 11), atol=1e-6)
    # space-invariant crop: every target is that crop's Gaussian
    inv = np.full((1, 1, 4, 4), 1.7, np.float32)
    for mode in ("mean", "median_sigma", "mean_sigma"):
        np.testing.assert_allclose(kernel_target(torch.from_numpy(inv), 11, mode)[0].numpy(), _np_gauss(1.7, 11),
                                   atol=1e-6)
    with pytest.raises(BsrError, match="kernel.target"):
        kernel_target(torch.from_numpy(inv), 11, "max")


def test_code_target_is_projection_without_mean():
    m = create_model("dan_v1", **TINY)
    k = kernel_target(torch.full((1, 1, 3, 3), 1.2), 7)
    want = k.reshape(1, -1).double().numpy() @ m.encoder[0].double().numpy()
    np.testing.assert_allclose(m.encode(k).double().numpy(), want, atol=1e-6)


# ------------------------------------------------------------------------------------------ align
def test_shift_image_moves_content_by_d():
    x = torch.arange(16.0).repeat(16, 1)[None, None]  # x(p) = column index
    y = shift_image(x, 1.5)
    np.testing.assert_allclose(y[0, 0, 4:12, 2:12].numpy(), (x + 1.5)[0, 0, 4:12, 2:12].numpy(), atol=1e-4)
    m = create_model("dan_v1", **TINY, grid="bicubic").eval()
    lr = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        raw = m(lr)["sr"]
    assert torch.allclose(m.super_resolve(lr), shift_image(raw, 1.5).clamp(0, 1))
    assert torch.allclose(m.super_resolve(lr, align="none"), raw.clamp(0, 1))
    with pytest.raises(BsrError, match="align"):
        m.super_resolve(lr, align="left")


# ------------------------------------------------------------------------------------------ converter
# The official layout, written out independently of models/convert_dan.py: our module path -> official path.
V1_TABLE = [
    (r"restorer\.head\.", "Restorer.head."),
    (r"restorer\.blocks\.(\d+)\.conv1\.", "Restorer.body.{0}.body.0."),
    (r"restorer\.blocks\.(\d+)\.conv2\.", "Restorer.body.{0}.body.2."),
    (r"restorer\.blocks\.(\d+)\.att\.squeeze\.", "Restorer.body.{0}.body.3.body.0."),
    (r"restorer\.blocks\.(\d+)\.att\.excite\.", "Restorer.body.{0}.body.3.body.2."),
    (r"restorer\.fusion\.", "Restorer.fusion."),
    (r"restorer\.up\.steps\.0\.", "Restorer.upscale.0."),
    (r"restorer\.up\.steps\.1\.", "Restorer.upscale.2."),
    (r"restorer\.up\.out\.", "Restorer.upscale.4."),
    (r"estimator\.head_lr\.", "Estimator.head_LR."),
    (r"estimator\.head_sr\.", "Estimator.head_HR."),
    (r"estimator\.blocks\.(\d+)\.conv1\.", "Estimator.body.{0}.body.0."),
    (r"estimator\.blocks\.(\d+)\.conv2\.", "Estimator.body.{0}.body.2."),
    (r"estimator\.blocks\.(\d+)\.att\.squeeze\.", "Estimator.body.{0}.body.3.body.0."),
    (r"estimator\.blocks\.(\d+)\.att\.excite\.", "Estimator.body.{0}.body.3.body.2."),
    (r"estimator\.out\.", "Estimator.out."),
]
V2_TABLE = [
    (r"restorer\.head_lr\.", "Restorer.head1."),
    (r"restorer\.head_code\.", "Restorer.head2."),
    (r"restorer\.groups\.(\d+)\.blocks\.(\d+)\.a1\.", "Restorer.body.{0}.body.{1}.body1.0."),
    (r"restorer\.groups\.(\d+)\.blocks\.(\d+)\.a2\.", "Restorer.body.{0}.body.{1}.body1.2."),
    (r"restorer\.groups\.(\d+)\.blocks\.(\d+)\.b1\.", "Restorer.body.{0}.body.{1}.body2.0."),
    (r"restorer\.groups\.(\d+)\.blocks\.(\d+)\.b2\.", "Restorer.body.{0}.body.{1}.body2.2."),
    (r"restorer\.fusion\.", "Restorer.fusion."),
    (r"restorer\.up\.steps\.0\.", "Restorer.upscale.0."),
    (r"restorer\.up\.steps\.1\.", "Restorer.upscale.2."),
    (r"restorer\.up\.out\.", "Restorer.upscale.4."),
    (r"estimator\.head_lr\.", "Estimator.head_LR.0."),
    (r"estimator\.head_sr\.", "Estimator.head_HR.0."),
    (r"estimator\.group\.blocks\.(\d+)\.a1\.", "Estimator.body.body.{0}.body1.0."),
    (r"estimator\.group\.blocks\.(\d+)\.a2\.", "Estimator.body.body.{0}.body1.2."),
    (r"estimator\.group\.blocks\.(\d+)\.b1\.", "Estimator.body.body.{0}.body2.0."),
    (r"estimator\.group\.blocks\.(\d+)\.b2\.", "Estimator.body.body.{0}.body2.2."),
    (r"estimator\.tail_conv\.", "Estimator.tail.0."),
    (r"estimator\.tail_fc\.", "Estimator.tail.2."),
]


def _official_state(model):
    table = V1_TABLE if model.version == "v1" else V2_TABLE
    out = {}
    for k, v in model.state_dict().items():
        if k in ("encoder", "init_kernel", "init_ker_map"):
            out[k] = v.clone()
            continue
        hits = [(m, rep) for pat, rep in table for m in [re.match(pat, k)] if m]
        assert len(hits) == 1, k
        m, rep = hits[0]
        out[rep.format(*m.groups()) + k[m.end():]] = v.clone()
    return out


@pytest.mark.parametrize("name,shapes", [
    ("dan_v1", {"Restorer.body.0.body.0.weight": (74, 74, 3, 3), "Restorer.body.3.body.3.body.0.weight": (4, 64, 1, 1),
                "Estimator.head_HR.weight": (32, 3, 9, 9), "Estimator.out.weight": (10, 32, 3, 3)}),
    ("dan_v2", {"Restorer.body.0.body.0.body1.0.weight": (64, 64, 3, 3),
                "Restorer.body.0.body.0.body2.0.weight": (64, 64, 1, 1),
                "Estimator.head_HR.0.weight": (32, 3, 17, 17), "Estimator.tail.2.weight": (441, 64, 1, 1)}),
])
def test_official_layout_names_and_shapes(name, shapes):
    from bsrdata.models.convert_dan import to_official

    m = create_model(name)
    sd = _official_state(m)
    assert len(sd) == (379 if name == "dan_v1" else 463)
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    assert set(to_official(m)) == set(sd)  # the converter's names equal the independent table's


@pytest.mark.parametrize("name", ["dan_v1", "dan_v2"])
def test_convert_round_trip(name, tmp_path):
    from bsrdata.models import checkpoint
    from bsrdata.models.convert_dan import convert

    torch.manual_seed(1)
    kw = {k: v for k, v in TINY.items() if k not in ("loops", "pca_sigma_max")}
    src = create_model(name, **kw, **({"ng": 2} if name == "dan_v2" else {})).eval()
    with torch.no_grad():
        src.set_basis(torch.randn(49, 4))  # a basis unlike our refit: the file's encoder must win
    torch.save(_official_state(src), tmp_path / "dan.pth")
    cfg = convert(tmp_path / "dan.pth", tmp_path / "out")  # variant detected from the names
    assert cfg["model"]["name"] == name and cfg["variant"] == name[-2:]
    assert cfg["model"]["grid"] == "bicubic" and cfg["model"]["pca"] == "checkpoint"
    assert cfg["source"]["tensors"] == len(src.state_dict()) and "grid" in cfg["adaptation"]
    model, saved = checkpoint.load(tmp_path / "out")
    assert saved["model"] == cfg["model"]
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    lr = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        assert torch.equal(model(lr)["sr"], src(lr)["sr"])
    other = "v2" if name == "dan_v1" else "v1"
    with pytest.raises(BsrError) as err:
        convert(tmp_path / "dan.pth", tmp_path / "out2", variant=other)
    assert "\n" not in str(err.value) and not (tmp_path / "out2").exists()


def test_convert_refuses_bad_files_in_one_line(tmp_path):
    from bsrdata.models.convert_dan import convert

    torch.manual_seed(0)
    src = create_model("dan_v1", **{k: v for k, v in TINY.items() if k not in ("loops", "pca_sigma_max")})
    good = _official_state(src)
    cases = {
        "missing": ({k: v for k, v in good.items() if k != "Estimator.out.bias"}, "1 missing keys: Estimator.out.bias"),
        "extra": ({**good, "Restorer.extra.weight": torch.zeros(1)}, "1 unexpected keys: Restorer.extra.weight"),
        "shape": ({**good, "Restorer.fusion.bias": torch.zeros(9)}, "Restorer.fusion.bias (9,)!=(8,)"),
        "foreign": ({"conv.weight": torch.zeros(1)}, "not a DAN state dict"),
    }
    for case, (sd, msg) in cases.items():
        torch.save(sd, tmp_path / f"{case}.pth")
        with pytest.raises(BsrError) as err:
            convert(tmp_path / f"{case}.pth", tmp_path / f"out_{case}")
        assert msg in str(err.value) and "\n" not in str(err.value), (case, str(err.value))
        assert not (tmp_path / f"out_{case}").exists()
    with pytest.raises(BsrError, match="--variant"):
        convert(tmp_path / "missing.pth", tmp_path / "o", variant="v3")


# ------------------------------------------------------------------------------------------ config, engine
def test_config_checks():
    task = DANTask()
    cfg = task.config({"model": {"name": "dan_v2"}})
    assert cfg["train"]["lr"] == 4e-4 and cfg["train"]["schedule"] == "multistep" and cfg["data"]["crop"] == 256
    assert cfg["train"]["batch_size"] == 64 and cfg["train"]["betas"] == [0.9, 0.99]
    cfg["data"]["root"] = None
    cfg["model"]["pca_sigma_max"] = 5.0
    assert task.resolve(cfg)["model"]["nb"] == 10 and cfg["model"]["ng"] == 5
    for bad, msg in ((({"model": {"name": "dan_v3"}}), "model.name"),
                     ({"model": {"name": "dan_v1", "ng": 2}}, "only dan_v2 has groups"),
                     ({"model": {"kernel_size": 20}}, "model.kernel_size must be odd"),
                     ({"kernel": {"target": "max"}}, "kernel.target"),
                     ({"pca": {"file": "basis.pth"}}, "model.pca is 'gaussian' but pca.file"),
                     ({"model": {"widths": 3}}, "unknown key 'model.widths'")):
        with pytest.raises(BsrError, match=msg):
            task.config(bad, where="x.yaml")


def test_pca_file_option(tmp_path):
    task = DANTask()
    basis = torch.linalg.qr(torch.randn(49, 4))[0]
    torch.save(basis, tmp_path / "pca.pth")
    cfg = task.config({"model": {"name": "dan_v1", **TINY, "pca": "file"}, "pca": {"file": str(tmp_path / "pca.pth")}})
    cfg = task.resolve(cfg)
    assert len(cfg["pca"]["sha256"]) == 64
    m = task.build_model(cfg)
    assert torch.allclose(m.encoder[0], basis) and torch.allclose(m.init_ker_map[0], basis[24])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from bsrdata.cli.main import main

    d = tmp_path_factory.mktemp("dan_engine")
    data = d / "ds"
    make_bench_dataset(data, n_test=5, n_train=4, h=32, w=32, num_classes=4)
    cfg = d / "dan_tiny.yaml"
    cfg.write_text("task: dan\nmodel: {name: dan_v2, nf: 8, nb: 1, ng: 1, code_len: 4, kernel_size: 9, loops: 2,\n"
                   "  est_nf: 8, est_blocks: 1}\ndata: {crop: 16}\n"
                   "train: {iterations: 3, batch_size: 2, workers: 0, log_every: 1, ckpt_every: 3,\n"
                   "  milestones: [2], val_groups: [1]}\n")
    with pytest.raises(SystemExit) as exc:
        main(["train", "dan", "--data", str(data), "--config", str(cfg), "--out", str(d / "run"), "--no-progress",
              "--device", "cpu"])
    assert exc.value.code == 0
    return d, data


def test_bsr_train_dan_on_the_fakes(trained):
    d, _ = trained
    run = d / "run"
    with open(run / "last" / "config.json") as f:
        cfg = json.load(f)
    m = cfg["model"]
    assert m["name"] == "dan_v2" and m["pca_sigma_max"] == 5.0 and m["nb"] == 1  # sigma_max from the dataset
    assert cfg["kernel"]["target"] == "mean" and cfg["adaptation"]["kernel_target"].startswith("mean:")
    log = (run / "log.csv").read_text().splitlines()
    assert len(log) == 4 and "kernel_l1" in log[0]
    lrs = [float(r.split(",")[1]) for r in log[1:]]
    assert lrs == pytest.approx([4e-4, 4e-4, 2e-4])  # x0.5 at the milestone
    assert json.loads((run / "metrics.json").read_text())["val"]["1"]["n"] >= 1


def test_bsr_bench_dan_ckpt(trained, capsys):
    from bsrdata.cli.main import main

    d, data = trained
    out = d / "bench"
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--data", str(data), "--method", "dan", "--method", "bicubic", "--ckpt", str(d / "run"),
              "--groups", "1,2", "--out", str(out), "--device", "cpu", "--opt", "align=none"])
    assert exc.value.code == 0, capsys.readouterr().err
    rows = {r["label"]: r for r in json.loads((out / "bench.json").read_text())["methods"]}
    prov = rows["dan"]["provenance"]
    assert prov["opts"] == {"align": "none"} and prov["model"]["name"] == "dan_v2"
    assert "kernel_target" in prov["adaptation"]


def test_bsr_convert_cli(tmp_path, capsys):
    from bsrdata.cli.main import main

    torch.manual_seed(0)
    src = create_model("dan_v2", **{k: v for k, v in TINY.items() if k not in ("loops", "pca_sigma_max")}, ng=1)
    torch.save(_official_state(src), tmp_path / "danv2.pth")
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(tmp_path / "danv2.pth"), "--arch", "dan", "--variant", "v2", "--out", str(tmp_path / "c")])
    assert exc.value.code == 0, capsys.readouterr().err
    assert "dan_v2" in capsys.readouterr().out and (tmp_path / "c" / "config.json").is_file()
