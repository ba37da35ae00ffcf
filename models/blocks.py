"""Small building blocks shared by the networks: conv-BN-activation, HRNet's BasicBlock and Bottleneck.

All blocks take and return float tensors (N, C, H, W). Convolutions followed by BatchNorm have no bias.
"""

from __future__ import annotations

import torch.nn as nn

BN_MOMENTUM = 0.1


def make_act(act: str | None) -> nn.Module:
    """``"relu"``, ``"lrelu"`` (LeakyReLU slope 0.01), or ``None`` (identity)."""
    if act is None:
        return nn.Identity()
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "lrelu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"unknown activation {act!r}")


class ConvBNAct(nn.Sequential):
    """k×k convolution (no bias, 'same' padding) -> BatchNorm2d -> activation.

    (N, cin, H, W) -> (N, cout, H/stride, W/stride).
    """

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, act: str | None = "relu"):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout, momentum=BN_MOMENTUM),
            make_act(act),
        )


class ConvNormAct(nn.Module):
    """k×k convolution (no bias, padding k//2) -> BatchNorm2d -> optional LeakyReLU(0.01).

    Attributes ``conv``, ``bn`` (and ``act``), the layout of the CMOS paper's GIA blocks (docs/cmos.md).
    Initialised as the public CMOS code initialises these blocks: conv weight kaiming-normal (fan_out,
    leaky_relu a = 0.01 with the activation, relu without), BN weight 1, bias 0.
    """

    def __init__(self, cin: int, cout: int, k: int = 3, act: bool = True, momentum: float = BN_MOMENTUM):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, momentum=momentum)
        self.act = nn.LeakyReLU(0.01, inplace=True) if act else nn.Identity()
        if act:
            nn.init.kaiming_normal_(self.conv.weight, a=0.01, mode="fan_out", nonlinearity="leaky_relu")
        else:
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a residual connection (ResNet basic block), expansion 1.

    Parameter names (conv1, bn1, conv2, bn2, downsample) follow the common HRNet checkpoint layout.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 momentum: float = BN_MOMENTUM):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=momentum)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        res = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + res)


class Bottleneck(nn.Module):
    """1×1 reduce -> 3×3 -> 1×1 expand (×4) with a residual connection (ResNet bottleneck)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 momentum: float = BN_MOMENTUM):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=momentum)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=momentum)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        res = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + res)


def make_layer(block, inplanes: int, planes: int, blocks: int, stride: int = 1,
               momentum: float = BN_MOMENTUM) -> nn.Sequential:
    """``blocks`` residual blocks; the first gets a 1×1 conv-BN shortcut when shape changes."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion, momentum=momentum),
        )
    layers = [block(inplanes, planes, stride, downsample, momentum=momentum)]
    layers += [block(planes * block.expansion, planes, momentum=momentum) for _ in range(1, blocks)]
    return nn.Sequential(*layers)
