"""ResNet with torchvision's module names, so torchvision's state_dicts load strictly.

``resnet18()``/``resnet50()`` ... build torchvision's ``resnet18``/``resnet50`` ... structures;
``model.load_state_dict(torch_state_dict)`` (or a ``.safetensors``/``.pt`` path) loads its published
weights with no renaming. Keys: ``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``,
``layer2.0.downsample.0.weight``, ``fc.weight`` ... Inputs are NCHW as in torch.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import jax

from jaxnets.core.registry import register
from jaxnets.models._common import build
from jaxnets.nn import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    Linear,
    MaxPool2d,
    Module,
    Params,
    ReLU,
    Sequential,
    State,
)
from jaxnets.nn.module import Key, Output

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101",
           "resnet152"]


def _downsample(inplanes: int, outplanes: int, stride: int) -> Sequential | None:
    """torchvision's ``downsample``: a strided 1x1 conv and a BatchNorm, when the shape changes."""
    if stride == 1 and inplanes == outplanes:
        return None
    return Sequential(Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), BatchNorm2d(outplanes))


@register(name="models.BasicBlock")
class BasicBlock(Module):
    """torchvision's ``BasicBlock``: two 3x3 convs with BatchNorm and a residual connection.

    Shapes: ``(N, inplanes, H, W)`` -> ``(N, planes, H/stride, W/stride)``.
    """

    inplanes: int
    planes: int
    stride: int = 1
    conv1: Conv2d = field(init=False, repr=False)
    bn1: BatchNorm2d = field(init=False, repr=False)
    relu: ReLU = field(init=False, repr=False)
    conv2: Conv2d = field(init=False, repr=False)
    bn2: BatchNorm2d = field(init=False, repr=False)
    downsample: Sequential | None = field(init=False, repr=False)

    expansion = 1

    def __post_init__(self) -> None:
        p = self.planes
        build(
            self,
            conv1=Conv2d(self.inplanes, p, 3, stride=self.stride, padding=1, bias=False),
            bn1=BatchNorm2d(p),
            relu=ReLU(),
            conv2=Conv2d(p, p, 3, padding=1, bias=False),
            bn2=BatchNorm2d(p),
            downsample=_downsample(self.inplanes, p, self.stride),
        )

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        m = self.bind(params, state, train=train, key=key)
        out = m.relu(m.bn1(m.conv1(x)))
        out = m.bn2(m.conv2(out))
        identity = x if self.downsample is None else m.downsample(x)
        return m.relu(out + identity), m.state


@register(name="models.Bottleneck")
class Bottleneck(Module):
    """torchvision's ``Bottleneck`` (ResNet V1.5: the stride is on the 3x3 conv).

    ``width = planes * width_per_group / 64 * groups``; output channels ``planes * 4``.
    Shapes: ``(N, inplanes, H, W)`` -> ``(N, 4 * planes, H/stride, W/stride)``.
    """

    inplanes: int
    planes: int
    stride: int = 1
    groups: int = 1
    width_per_group: int = 64
    conv1: Conv2d = field(init=False, repr=False)
    bn1: BatchNorm2d = field(init=False, repr=False)
    conv2: Conv2d = field(init=False, repr=False)
    bn2: BatchNorm2d = field(init=False, repr=False)
    conv3: Conv2d = field(init=False, repr=False)
    bn3: BatchNorm2d = field(init=False, repr=False)
    relu: ReLU = field(init=False, repr=False)
    downsample: Sequential | None = field(init=False, repr=False)

    expansion = 4

    def __post_init__(self) -> None:
        width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
        out = self.planes * self.expansion
        build(
            self,
            conv1=Conv2d(self.inplanes, width, 1, bias=False),
            bn1=BatchNorm2d(width),
            conv2=Conv2d(width, width, 3, stride=self.stride, padding=1, groups=self.groups,
                         bias=False),
            bn2=BatchNorm2d(width),
            conv3=Conv2d(width, out, 1, bias=False),
            bn3=BatchNorm2d(out),
            relu=ReLU(),
            downsample=_downsample(self.inplanes, out, self.stride),
        )

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        m = self.bind(params, state, train=train, key=key)
        out = m.relu(m.bn1(m.conv1(x)))
        out = m.relu(m.bn2(m.conv2(out)))
        out = m.bn3(m.conv3(out))
        identity = x if self.downsample is None else m.downsample(x)
        return m.relu(out + identity), m.state


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


@register(name="models.ResNet")
class ResNet(Module):
    """torchvision's ``ResNet(block, layers, num_classes, groups, width_per_group)``.

    Args:
      block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50/101/152, ResNeXt,
        Wide ResNet).
      layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
      num_classes: outputs of ``fc``.
      groups, width_per_group: of the bottleneck's 3x3 conv (ResNeXt ``32, 4``; Wide ResNet
        ``1, 128``).

    Shapes: ``(N, 3, H, W)`` float -> ``(N, num_classes)`` logits. torchvision's
    ``zero_init_residual``, ``replace_stride_with_dilation`` and ``norm_layer`` are not offered.
    Fresh params use each layer's PyTorch default init (torchvision re-draws conv weights with
    ``kaiming_normal_(mode="fan_out")``; see docs/migrating_from_pytorch.md).

    Raises:
      ValueError: an unknown ``block`` or a ``layers`` tuple that is not 4 positive ints.
    """

    block: str = "basic"
    layers: tuple[int, ...] = (2, 2, 2, 2)
    num_classes: int = 1000
    groups: int = 1
    width_per_group: int = 64
    conv1: Conv2d = field(init=False, repr=False)
    bn1: BatchNorm2d = field(init=False, repr=False)
    relu: ReLU = field(init=False, repr=False)
    maxpool: MaxPool2d = field(init=False, repr=False)
    layer1: Sequential = field(init=False, repr=False)
    layer2: Sequential = field(init=False, repr=False)
    layer3: Sequential = field(init=False, repr=False)
    layer4: Sequential = field(init=False, repr=False)
    avgpool: AdaptiveAvgPool2d = field(init=False, repr=False)
    fc: Linear = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.block not in _BLOCKS:
            raise ValueError(f"ResNet: block must be 'basic' or 'bottleneck', got {self.block!r}.")
        object.__setattr__(self, "layers", tuple(self.layers))
        if len(self.layers) != 4 or not all(isinstance(n, int) and n >= 1 for n in self.layers):
            raise ValueError(f"ResNet: layers must be 4 positive ints, got {self.layers!r}.")
        cls = _BLOCKS[self.block]
        extra = {} if cls is BasicBlock else {"groups": self.groups,
                                              "width_per_group": self.width_per_group}
        inplanes = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), self.layers)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(cls(inplanes, planes, stride, **extra))  # type: ignore[arg-type]
                inplanes = planes * cls.expansion
            stages.append(Sequential(*blocks))
        build(
            self,
            conv1=Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            bn1=BatchNorm2d(64),
            relu=ReLU(),
            maxpool=MaxPool2d(3, stride=2, padding=1),
            layer1=stages[0],
            layer2=stages[1],
            layer3=stages[2],
            layer4=stages[3],
            avgpool=AdaptiveAvgPool2d((1, 1)),
            fc=Linear(512 * cls.expansion, self.num_classes),
        )

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        m = self.bind(params, state, train=train, key=key)
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        x = m.avgpool(x)
        return m.fc(jax.numpy.reshape(x, (x.shape[0], -1))), m.state


def resnet18(num_classes: int = 1000) -> ResNet:
    """torchvision's ``resnet18`` structure (11.7M params at 1000 classes)."""
    return ResNet("basic", (2, 2, 2, 2), num_classes)


def resnet34(num_classes: int = 1000) -> ResNet:
    """torchvision's ``resnet34`` structure."""
    return ResNet("basic", (3, 4, 6, 3), num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """torchvision's ``resnet50`` structure (25.6M params at 1000 classes)."""
    return ResNet("bottleneck", (3, 4, 6, 3), num_classes)


def resnet101(num_classes: int = 1000) -> ResNet:
    """torchvision's ``resnet101`` structure."""
    return ResNet("bottleneck", (3, 4, 23, 3), num_classes)


def resnet152(num_classes: int = 1000) -> ResNet:
    """torchvision's ``resnet152`` structure."""
    return ResNet("bottleneck", (3, 8, 36, 3), num_classes)
