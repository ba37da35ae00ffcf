import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from engine_fakes import TinyCMOS, TinyTask, small_cfg
from sr_fakes import make_bench_dataset

from bsrdata.errors import BsrError
from bsrdata.models import checkpoint
from bsrdata.models.engine.task import TASKS, TRAIN_DEFAULTS, get_task, merge_config
from bsrdata.models.engine.task_cmos import CMOSTask
from bsrdata.models.engine.trainer import StreamSampler, lr_at, train
from bsrdata.models.losses import cmos_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("d") / "data")
    make_bench_dataset(root, n_test=5, n_train=6, h=32, w=40, num_classes=4)
    return root


# ------------------------------------------------------------------------------------ config
def test_unknown_keys_are_one_line_errors():
    task = CMOSTask()
    with pytest.raises(BsrError, match="unknown key 'train.lrr'"):
        task.config({"train": {"lrr": 1}}, where="x.yaml")
    with pytest.raises(BsrError, match="x.yaml: unknown key 'optim'"):
        task.config({"optim": {}}, where="x.yaml")
    with pytest.raises(BsrError, match="model.gia.flw"):
        task.config({"model": {"gia": {"flw": False}}})
    with pytest.raises(BsrError, match="must be a mapping"):
        task.config({"train": 3})
    with pytest.raises(BsrError, match="model.name"):
        task.config({"model": {"name": "rrdb_sft"}})
    cfg = task.config({"train": {"lr": "2e-4"}, "model": {"gia": {"spatial": False}}})
    assert cfg["train"]["lr"] == 2e-4 and cfg["train"]["betas"] == TRAIN_DEFAULTS["betas"]
    assert cfg["model"]["gia"] == {"spatial": False} and cfg["data"]["root"] is None
    assert merge_config({"a": {"b": 1}}, {"a": {"b": 2}}) == {"a": {"b": 2}}


def test_task_table():
    assert TASKS.target("rrdb-sft").startswith("bsrdata.models.engine.task_sr:")
    assert TASKS.target("blind").startswith("bsrdata.models.engine.task_sr:")
    assert isinstance(get_task("cmos"), CMOSTask)
    with pytest.raises(BsrError, match="unknown"):
        get_task("gan")


# test_shipped_configs_are_valid: tests/test_configs.py (every file in configs/)


def test_public_settings_in_configs():
    import yaml

    with open(os.path.join(ROOT, "configs", "cmos_nyuv2.yaml")) as f:
        c = CMOSTask().config(yaml.safe_load(f))
    assert (c["train"]["lr"], c["train"]["betas"], c["train"]["warmup"], c["train"]["iterations"],
            c["train"]["batch_size"]) == (1e-4, [0.9, 0.99], 1000, 70000, 8)
    assert c["data"]["crop"] == [480, 640] and c["data"]["zoom"] == [1, 1.2, 1.5] and c["model"]["num_classes"] == 40
    with open(os.path.join(ROOT, "configs", "cmos_cityscapes.yaml")) as f:
        c = CMOSTask().config(yaml.safe_load(f))
    assert (c["train"]["warmup"], c["train"]["iterations"], c["model"]["num_classes"]) == (3720, 260000, 19)


# ------------------------------------------------------------------------------------ schedule, sampler
def test_warmup_cosine_schedule():
    t = dict(TRAIN_DEFAULTS, lr=1.0, warmup=10, iterations=110, min_lr=0.0)
    assert lr_at(0, t) == pytest.approx(0.1) and lr_at(9, t) == pytest.approx(1.0)
    assert lr_at(10, t) == pytest.approx(1.0)
    assert lr_at(60, t) == pytest.approx(0.5)
    assert lr_at(110, t) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(35, t) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_at(50, dict(t, schedule="constant")) == 1.0


def test_multistep_and_restart_schedules():
    t = dict(TRAIN_DEFAULTS, lr=1.0, warmup=0, iterations=100, schedule="multistep", milestones=[20, 50], gamma=0.5)
    assert [lr_at(i, t) for i in (0, 19, 20, 49, 50, 99)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    r = dict(TRAIN_DEFAULTS, lr=1.0, warmup=0, iterations=100, schedule="cosine_restart", restart_period=40)
    assert lr_at(0, r) == lr_at(40, r) == lr_at(80, r) == 1.0
    assert lr_at(20, r) == pytest.approx(0.5) and lr_at(60, r) == pytest.approx(0.5)
    task = get_task("rrdb-sft")
    with pytest.raises(BsrError, match="train.milestones"):
        task.config({"task": "rrdb-sft", "train": {"schedule": "multistep", "milestones": [50, 20]}})
    with pytest.raises(BsrError, match="restart_period"):
        task.config({"task": "rrdb-sft", "train": {"schedule": "cosine_restart"}})
    with pytest.raises(BsrError, match="train.schedule must be one of"):
        task.config({"task": "rrdb-sft", "train": {"schedule": "step"}})


def test_sampler_resumes_and_splits_ranks():
    full = StreamSampler(10, 2, seed=3)
    it = iter(full)
    batches = [next(it) for _ in range(12)]  # 5 per epoch -> crosses epochs
    assert {i for _, i in sum(batches[:5], [])} == set(range(10))
    assert batches[5][0][0] == 1 and batches[0] != batches[5]
    it2 = iter(StreamSampler(10, 2, seed=3, start=7))
    assert [next(it2) for _ in range(5)] == batches[7:12]
    r0, r1 = StreamSampler(9, 2, seed=1, rank=0, world=2), StreamSampler(9, 2, seed=1, rank=1, world=2)
    a, b = next(iter(r0)) + next(iter(r1)), r0.epoch_indices(0) + r1.epoch_indices(0)
    assert len(set(i for _, i in a)) == 4 and set(b) == set(range(9))
    with pytest.raises(BsrError, match="batch"):
        StreamSampler(3, 4, seed=0)


# ------------------------------------------------------------------------------------ loss
def test_cmos_loss_hand_computed():
    rng = np.random.default_rng(0)
    n, c, h, w = 2, 3, 2, 3
    out = {k: torch.tensor(rng.normal(size=s), dtype=torch.float32) for k, s in
           (("blur", (n, 1, h, w)), ("aux_blur", (n, 1, h, w)), ("seg", (n, c, h, w)), ("aux_seg", (n, c, h, w)))}
    blur = torch.tensor(rng.uniform(0, 5, size=(n, 1, h, w)), dtype=torch.float32)
    seg = torch.tensor(rng.integers(0, c, size=(n, h, w)))
    seg[0, 0, :] = 255

    def ce(logits):
        z = logits.double().numpy()
        lse = np.log(np.exp(z).sum(1))
        tot, cnt = 0.0, 0
        for b in range(n):
            for y in range(h):
                for x in range(w):
                    g = int(seg[b, y, x])
                    if g != 255:
                        tot += lse[b, y, x] - z[b, g, y, x]
                        cnt += 1
        return tot / cnt

    def l1(p):
        return float(np.abs(p.double().numpy() - blur.double().numpy()).mean())

    expect = l1(out["blur"]) + ce(out["seg"]) + 0.5 * (l1(out["aux_blur"]) + ce(out["aux_seg"]))
    total, parts = cmos_loss(out, blur, seg)
    assert float(total) == pytest.approx(expect, rel=1e-5)
    assert parts["ce"] == pytest.approx(ce(out["seg"]), rel=1e-5)
    total, _ = cmos_loss(out, blur, seg, aux_weight=1.0)
    assert float(total) == pytest.approx(expect + 0.5 * (l1(out["aux_blur"]) + ce(out["aux_seg"])), rel=1e-5)
    total, parts = cmos_loss(out, blur, torch.full_like(seg, 255))
    assert parts["ce"] == 0.0 and math.isfinite(float(total))
    only_blur = {k: v for k, v in out.items() if "blur" in k}
    total, parts = cmos_loss(only_blur, blur, None)
    assert set(parts) == {"l1", "aux_l1"}


# ------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(0)
    m = TinyCMOS(num_classes=4, bn=True)
    m.body[1].running_mean.uniform_()
    cfg = {"model": {"name": "tiny_cmos_test", "num_classes": 4, "bn": True}, "note": "x"}
    checkpoint.save(tmp_path / "ck", m, cfg)
    m2, cfg2 = checkpoint.load(tmp_path / "ck")
    assert cfg2 == cfg and not m2.training
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = torch.rand(1, 3, 4, 5)
    m.eval()
    assert torch.equal(m(x)["blur"], m2(x)["blur"])
    # another class count in config.json -> one-line error
    cfg["model"]["num_classes"] = 5
    with open(tmp_path / "ck" / "config.json", "w") as f:
        json.dump(cfg, f)
    with pytest.raises(BsrError, match="do not fit"):
        checkpoint.load(tmp_path / "ck")
    with pytest.raises(BsrError, match="not a checkpoint"):
        checkpoint.load(tmp_path / "nothing")


def test_real_cmos_checkpoint_round_trip(tmp_path):
    from bsrdata.models import create_model

    torch.manual_seed(0)
    m = create_model("cmos_blur", num_classes=4).eval()
    checkpoint.save(tmp_path / "ck", m, {"model": {"name": "cmos_blur", "num_classes": 4, "backbone_weights": "/x"}})
    m2, _ = checkpoint.load(tmp_path / "ck")
    x = torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        assert torch.equal(m(x)["blur"], m2(x)["blur"])


# ------------------------------------------------------------------------------------ training loop
def _params(run):
    m, _ = checkpoint.load(os.path.join(run, "last"))
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_train_writes_run_and_learns_something(tmp_path, data):
    task = TinyTask()
    cfg = small_cfg(task, iterations=6, val_every=3)
    res = train(task, cfg, data, tmp_path / "run", progress=False)
    assert res["iterations"] == 6
    run = tmp_path / "run"
    for f in ("config.json", "log.csv", "val.csv", "metrics.json", "last/model.safetensors", "last/state.pt"):
        assert (run / f).exists(), f
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,lr,loss,l1,aux_l1,ce,aux_ce") and len(rows) == 7
    val = (run / "val.csv").read_text().splitlines()
    assert val[0].startswith("iteration,group") and len(val) == 1 + 2 * 2  # group 1 + avg, at 3 and 6
    assert json.loads((run / "config.json").read_text())["data"]["root"] == os.path.abspath(data)
    conv = json.loads((run / "metrics.json").read_text())["conventions"]  # the task's scoring conventions
    assert conv == task.conventions(json.loads((run / "config.json").read_text()))
    assert conv["miou"]["definition"] == "public" and conv["blur"]["sigma_max"] > 0


def test_resume_equals_uninterrupted(tmp_path, data):
    task = TinyTask()
    cfg = small_cfg(task, iterations=5, ckpt_every=100)
    train(task, cfg, data, tmp_path / "a", progress=False)
    train(task, cfg, data, tmp_path / "b", progress=False, stop_after=2)
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["iteration"] == 2
    with pytest.raises(BsrError, match="--resume"):
        train(task, cfg, data, tmp_path / "b", resume=False, progress=False)
    train(task, cfg, data, tmp_path / "b", resume=True, progress=False)
    a, b = _params(tmp_path / "a"), _params(tmp_path / "b")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert len((tmp_path / "b" / "log.csv").read_text().splitlines()) == 1 + 5
    other = small_cfg(task, iterations=5)
    other["model"]["num_classes"] = 5
    with pytest.raises(BsrError, match="checkpoint is"):
        train(task, other, data, tmp_path / "b", resume=True, progress=False)


def test_multitask_needs_labels(tmp_path):
    from test_torch_dataset import make_coord_dataset

    root = make_coord_dataset(str(tmp_path / "nolab"), labels=False)
    task = TinyTask()
    with pytest.raises(BsrError, match="no segmentation labels"):
        train(task, small_cfg(task), root, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last").exists()


def test_cli_bad_config_and_labels(tmp_path, data):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  iterationz: 3\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "bsrdata.cli.main", "train", "cmos", "--data", data, "--config", str(bad),
                        "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 1 and "unknown key 'train.iterationz'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    r = subprocess.run([sys.executable, "-m", "bsrdata.cli.main", "train", "nope", "--data", data,
                        "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 1 and "unknown task 'nope'" in r.stderr


def test_bad_val_groups_fail_before_training(tmp_path, data):
    task = TinyTask()
    cfg = small_cfg(task)
    cfg["train"]["val_groups"] = [9]
    with pytest.raises(BsrError, match="val_groups"):
        train(task, cfg, data, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last").exists()


def test_blur_bias_starts_at_training_mean_sigma(tmp_path):
    from test_torch_dataset import make_coord_dataset

    from bsrdata.dataset import BSRDataset

    root = make_coord_dataset(str(tmp_path / "d"), sigma=2.5)
    task = CMOSTask()
    cfg = task.config({"model": {"num_classes": 3, "width": 0.25}})
    torch.manual_seed(0)
    model = task.build_model(cfg).eval()
    assert task.init_from_data(model, BSRDataset(root, "train"), cfg) == {"blur_bias": pytest.approx(2.5)}
    assert float(model.final["blur"][-1].bias.detach()) == pytest.approx(2.5)
    off = task.config({"model": {"num_classes": 3, "width": 0.25}, "init": {"blur_bias_samples": 0}})
    assert task.init_from_data(model, BSRDataset(root, "train"), off) == {}


def test_cli_train_with_backbone_weights_then_eval(tmp_path, data, capsys):
    """bsr train cmos end to end (real CMOS, 2 iterations) with an ImageNet-style backbone file."""
    from safetensors.torch import save_file

    from bsrdata.cli.main import main
    from bsrdata.models.hrnet import hrnet_w18_small_v2

    b = hrnet_w18_small_v2(stem_stride=2)
    save_file({k: v for k, v in b.state_dict().items() if k.startswith("layer1")}, str(tmp_path / "in1k.safetensors"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model:\n  num_classes: 4\n  width: 1.0\n  backbone_weights: {tmp_path / 'in1k.safetensors'}\n"
                   "data:\n  crop: [32, 40]\ntrain:\n  iterations: 2\n  batch_size: 2\n  workers: 0\n  threads: 1\n")
    with pytest.raises(SystemExit) as e:
        main(["train", "cmos", "--data", data, "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "tensors loaded" in out and "| Group1 |" in out
    rep = json.loads((tmp_path / "run" / "pretrained.json").read_text())
    assert "layer1.0.conv1.weight" in rep["loaded"]
    model, cfg2 = checkpoint.load(tmp_path / "run" / "last")  # backbone_weights not needed to rebuild
    assert cfg2["model"]["backbone_weights"].endswith("in1k.safetensors") and model.num_classes == 4


# ------------------------------------------------------------------------------------ one-line CLI errors
def _bsr_error(capsys, *args):
    """Run ``bsr`` in-process; it must exit 1 with one ``bsr: error:`` line on stderr -> that line."""
    from bsrdata.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert e.value.code == 1, err
    assert len(lines) == 1 and lines[0].startswith("bsr: error: ") and "Traceback" not in err, err
    return lines[0]


def _train_args(data, out, *sets):
    args = ["train", "cmos", "--data", data, "--out", str(out), "--no-progress", "--set", "model.num_classes=4",
            "--set", "train.workers=0", "--set", "train.iterations=1", "--set", "train.batch_size=2"]
    for s in sets:
        args += ["--set", s]
    return args


@pytest.mark.parametrize("sets, device, where", [
    (["model.width=5"], None, "model.width"),
    (["model.width=fat"], None, "model.width"),
    (["model.num_classes=0"], None, "model.num_classes"),
    (["model.window=[3]"], None, "model.window"),
    (["model.gia.flow=maybe"], None, "model.gia.flow"),
    (["model.backbone_weights=3"], None, "model.backbone_weights"),
    (["train.betas=[2, 0.9]"], None, "train.betas"),
    (["train.workers=-1"], None, "train.workers"),
    (["data.crop=[0, 4]"], None, "data.crop"),
    (["data.zoom=[0.5]"], None, "data.zoom"),
    (["data.zoom_rule=magic"], None, "data.zoom_rule"),
    (["loss.seg_weight=-1"], None, "loss.seg_weight"),
    (["train.amp=2"], None, "train.amp"),
    (["data.hflip=yes please"], None, "data.hflip"),
    ([], "bogus", "--device"),
])
def test_cli_bad_values_are_one_line_errors(tmp_path, data, capsys, sets, device, where):
    args = _train_args(data, tmp_path / "run", *sets) + (["--device", device] if device else [])
    line = _bsr_error(capsys, *args)
    assert where in line
    assert not (tmp_path / "run").exists()


def test_cli_bad_sr_values_are_one_line_errors(tmp_path, data, capsys):
    base = ["train", "rrdb-sft", "--data", data, "--out", str(tmp_path / "run")]
    for s, key in (("model.nf=0", "model.nf"), ("model.scale=5", "model.scale"), ("model.fusion=mul", "model.fusion"),
                   ("model.gia_groups=5", "model.gia_groups"), ("model.img_residual=nearest", "model.img_residual"),
                   ("model.num_classes=0", "model.num_classes"), ("data.rot90=3", "data.rot90")):
        assert key in _bsr_error(capsys, *base, "--set", s)
    blind = ["train", "blind", "--data", data, "--out", str(tmp_path / "run")]
    assert "model.sr_kw.nff" in _bsr_error(capsys, *blind, "--set", "init.cmos_ckpt=x", "--set", "model.sr_kw={nff: 3}")
    assert "model.cmos_kw.width" in _bsr_error(capsys, *blind, "--set", "init.cmos_ckpt=x",
                                               "--set", "model.cmos_kw={width: 0}")
    line = _bsr_error(capsys, *blind, "--set", f"init.cmos_ckpt={tmp_path / 'nope'}")
    assert "no such checkpoint" in line and "init.cmos_ckpt" in line
    assert not (tmp_path / "run").exists()


def test_constructor_errors_name_the_model_key(tmp_path, data):
    class Broken(TinyTask):
        def build_model(self, cfg):
            raise ValueError("bn must be a bool here")

    task = Broken()
    with pytest.raises(BsrError, match=r"^config: model\.bn: bn must be a bool here$"):
        train(task, small_cfg(task), data, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists() and not (tmp_path / "run" / "last").exists()
    with pytest.raises(BsrError, match=r"^x.yaml: model: other$"):
        Broken.build_model = lambda self, cfg: (_ for _ in ()).throw(TypeError("other"))
        task.create_model(small_cfg(task), where="x.yaml")


def _fake_last(run, *, task="cmos", state=b"garbage", config=None):
    """A run folder whose last/ holds a real CMOS checkpoint of the config _train_args asks for."""
    from bsrdata.models.engine.config import apply_overrides

    user = apply_overrides({"task": "cmos"}, ["model.num_classes=4", "train.workers=0", "train.iterations=1",
                                              "train.batch_size=2"])
    cfg = get_task("cmos").config(user)
    if task != "cmos":
        cfg = get_task(task).config({"task": task, "model": {"num_classes": 4}})
    last = run / "last"
    checkpoint.save(last, torch.nn.Conv2d(1, 1, 1), cfg)
    if state is not None:
        (last / "state.pt").write_bytes(state)
    if config is not None:
        (last / "config.json").write_text(config)
    return last


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["no_config", "garbage_config", "other_task", "garbage_state", "no_state",
                                  "state_not_ours", "weights_not_ours", "top_config_other_task",
                                  "top_config_garbage"])
def test_cli_resume_of_foreign_run_folder(tmp_path, data, capsys, case):
    run = tmp_path / "run"
    if case == "no_config":
        (run / "last").mkdir(parents=True)
        (run / "last" / "notes.txt").write_text("not ours")
        want = "last: not a checkpoint"
    elif case == "garbage_config":
        _fake_last(run, config="{not json")
        want = "config.json: unreadable"
    elif case == "other_task":
        _fake_last(run, task="rrdb-sft")
        want = "checkpoint is"
    elif case == "garbage_state":
        _fake_last(run)
        want = "state.pt: unreadable"
    elif case == "no_state":
        _fake_last(run, state=None)
        want = "state.pt: missing"
    elif case == "state_not_ours":
        import io

        buf = io.BytesIO()
        torch.save({"epoch": 3}, buf)
        _fake_last(run, state=buf.getvalue())
        want = "state.pt: not a bsr train state"
    elif case == "weights_not_ours":  # a Conv2d's weights under a CMOS config.json
        import io

        buf = io.BytesIO()
        torch.save({"iteration": 1, "optimizer": {}, "scaler": {}}, buf)
        _fake_last(run, state=buf.getvalue())
        want = "weights do not fit"
    else:
        run.mkdir()
        (run / "config.json").write_text('{"task": "rrdb-sft", "model": {}, "train": {}}'
                                         if case == "top_config_other_task" else "\x00\x01")
        want = "is a run of task 'rrdb-sft'" if case == "top_config_other_task" else "not a run config"
    before = _snapshot(run)
    line = _bsr_error(capsys, *_train_args(data, run), "--resume")
    assert want in line
    assert _snapshot(run) == before  # nothing written, nothing removed
    if case == "no_config":  # without --resume the foreign last/ is not replaced either
        assert "not a checkpoint" in _bsr_error(capsys, *_train_args(data, run))
        assert _snapshot(run) == before


def test_cli_device_through_pick_device(tmp_path, data):
    """A real subprocess: --device bogus is one stderr line, no traceback, nothing written."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "bsrdata.cli.main"] + _train_args(data, tmp_path / "r") +
                       ["--device", "bogus", "--set", "model.width=0.25"], capture_output=True, text=True,
                       cwd=ROOT, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "bsr: error: --device: unknown device 'bogus' (use auto, cpu, cuda or cuda:N)"]
    assert not (tmp_path / "r").exists()


def test_train_into_a_locked_run_folder_is_refused(tmp_path, data):
    """Two trainings into one --out: the second is one line, and the running one's folder is untouched."""
    from bsrdata.lock import folder_lock

    task = TinyTask()
    run = tmp_path / "run"
    with folder_lock(run, "train"):
        with pytest.raises(BsrError, match=f"{run}: in use by another bsr process \\(train, pid"):
            train(task, small_cfg(task, iterations=2, val_every=2), data, run, progress=False)
        assert sorted(os.listdir(run)) == [".bsr-lock"]
    res = train(task, small_cfg(task, iterations=2, val_every=2), data, run, progress=False)
    assert res["iterations"] == 2 and not (run / ".bsr-lock").exists()


def test_train_within_plans_from_the_steady_iterations(tmp_path, data):
    import csv

    from bsrdata.models.engine import budget

    task = TinyTask()
    cfg = small_cfg(task)
    res, spi, spent, last = budget.train_within(task, cfg, str(data), str(tmp_path / "run"), 4.0, progress=False)
    with open(tmp_path / "run" / "calibration" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == list(range(1, budget.CALIBRATION_ITERATIONS + 1))
    k0, k1 = budget.CALIBRATION_SKIP, budget.CALIBRATION_ITERATIONS
    e = {int(r["iteration"]): int(r["iteration"]) * float(r["sec_per_it"]) for r in rows}
    assert spi == pytest.approx((e[k1] - e[k0]) / (k1 - k0))
    assert cfg["train"]["iterations"] >= 10 and res["iterations"] >= 1 and os.path.isdir(last)


def test_train_threads_hold_for_the_run_only(tmp_path, data):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        task = TinyTask()
        train(task, small_cfg(task, iterations=1, threads=1), data, tmp_path / "run", progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
