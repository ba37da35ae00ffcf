import pytest
import torch

from bsrdata.errors import BsrError
from bsrdata.models import create_model, list_models
from bsrdata.models.hrnet import load_pretrained


def test_registry_and_branch_shapes():
    assert "hrnet_w18_small_v2" in list_models()
    m = create_model("hrnet_w18_small_v2").eval()
    with torch.no_grad():
        ys = m(torch.randn(1, 3, 24, 32))
    assert [tuple(y.shape) for y in ys] == [(1, 18, 24, 32), (1, 36, 12, 16), (1, 72, 6, 8), (1, 144, 3, 4)]
    n = sum(p.numel() for p in m.parameters())
    assert n == 3_860_720
    assert all(b.momentum == 0.01 for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))


def test_structure_counts():
    m = create_model("hrnet_w18_small_v2")
    assert m.conv1.stride == (1, 1) and m.conv2.stride == (1, 1)
    assert len(m.layer1) == 2 and len(m.stage2) == 1 and len(m.stage3) == 3 and len(m.stage4) == 2
    assert all(len(b) == 2 for b in m.stage4[0].branches)
    assert create_model("hrnet_w18_small_v2", stem_stride=2).conv1.stride == (2, 2)


def test_unknown_model_is_bsrerror():
    with pytest.raises(BsrError):
        create_model("hrnet_w99")


def test_pretrained_from_safetensors_partial(tmp_path):
    from safetensors.torch import save_file

    src = create_model("hrnet_w18_small_v2", stem_stride=2)  # strides do not change shapes
    state = {k: v.clone() for k, v in src.state_dict().items() if k.startswith(("conv1", "layer1"))}
    state["incre_modules.0.weight"] = torch.zeros(3)  # classification head: skipped
    save_file(state, str(tmp_path / "w.safetensors"))
    m = create_model("hrnet_w18_small_v2", pretrained=str(tmp_path / "w.safetensors"))
    rep = m.pretrained_report
    assert "conv1.weight" in rep["loaded"] and "incre_modules.0.weight" in rep["skipped"]
    assert "stage4.0.branches.3.1.conv2.weight" in rep["missing"]
    assert torch.equal(m.conv1.weight, src.conv1.weight)
    # weights_only torch file with a "state_dict" wrapper and "module." prefixes
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "w.pth")
    m2 = create_model("hrnet_w18_small_v2")
    rep = load_pretrained(m2, str(tmp_path / "w.pth"))
    assert "layer1.0.conv1.weight" in rep["loaded"]
    assert torch.equal(m2.layer1[0].conv1.weight, src.layer1[0].conv1.weight)


def test_pretrained_bad_files(tmp_path):
    m = create_model("hrnet_w18_small_v2")
    with pytest.raises(BsrError, match="not found"):
        load_pretrained(m, str(tmp_path / "none.pth"))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(BsrError, match="cannot read"):
        load_pretrained(m, str(tmp_path / "bad.safetensors"))
    torch.save({"backbone.conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "prefixed.pth")
    with pytest.raises(BsrError, match="no tensor of this file fits"):
        load_pretrained(m, str(tmp_path / "prefixed.pth"))
