import pytest
import torch

from bsrdata.models import create_model
from bsrdata.models.cmos import CMOS


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_count_equals_the_public_network():
    assert _count(create_model("cmos", num_classes=40)) == 15_975_866
    assert _count(create_model("cmos", num_classes=19)) == 15_969_776


def test_forward_shapes_and_keys():
    torch.manual_seed(0)
    m = create_model("cmos", num_classes=5).eval()
    with torch.no_grad():
        out = m(torch.rand(1, 3, 16, 20))
    assert list(out) == ["blur", "seg", "aux_blur", "aux_seg"]
    assert out["blur"].shape == (1, 1, 64, 80) and out["aux_blur"].shape == (1, 1, 64, 80)
    assert out["seg"].shape == (1, 5, 64, 80) and out["aux_seg"].shape == (1, 5, 64, 80)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_single_task_variants():
    torch.manual_seed(0)
    b = create_model("cmos_blur").eval()
    s = create_model("cmos_seg", num_classes=7).eval()
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        assert list(b(x)) == ["blur", "aux_blur"]
        assert list(s(x)) == ["seg", "aux_seg"] and s(x)["seg"].shape[1] == 7
    assert not hasattr(b, "gia_m") and _count(b) < _count(create_model("cmos"))


def test_gia_ablation_configurations_and_training_step():
    torch.manual_seed(0)
    full = _count(CMOS(num_classes=5))
    counts = [_count(CMOS(num_classes=5, gia=g)) for g in (
        {"flow": False, "channel": False, "spatial": False}, {"channel": False, "spatial": False},
        {"spatial": False})]
    assert counts[0] < counts[1] < counts[2] < full
    m = CMOS(num_classes=5, gia={"spatial": False}).train()
    out = m(torch.rand(2, 3, 16, 20))
    loss = sum(v.float().mean() for v in out.values())
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert sum(g is None for g in grads) == 0  # every parameter is used (DDP needs this)


def test_bad_arguments():
    with pytest.raises(ValueError):
        CMOS(tasks=("depth",))
    with pytest.raises(ValueError):
        CMOS(gia={"flows": False})
    with pytest.raises(TypeError):
        create_model("cmos", widht=3)


def test_width_option():
    from bsrdata.models.cmos import _groups

    assert _groups(36, 8) == 6 and _groups(144, 12) == 12
    m = create_model("cmos", num_classes=5, width=0.5).eval()
    assert m.backbone.out_channels == (9, 18, 36, 72)
    assert _count(m) < _count(create_model("cmos", num_classes=5)) / 3
    with torch.no_grad():
        assert m(torch.rand(1, 3, 8, 12))["seg"].shape == (1, 5, 32, 48)
