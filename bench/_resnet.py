"""ResNet-18 written as flax.linen and PyTorch users write it, for the benchmarks to compare against.

Both are torchvision's ResNet-18 (BasicBlock, layers (2, 2, 2, 2), a 7x7/2 stem and a 3x3/2 max
pool, BatchNorm with torch's eps 1e-5 and momentum 0.1). The torch one has torchvision's module
names, so its ``state_dict`` and ``jaxnets.models.resnet18``'s have the same keys and shapes
(torchvision itself is not installed here: its PyPI wheel needs a CUDA torch). Each library is
imported inside its builder, so a fresh process that times one library imports no other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["flax_resnet18", "torch_resnet18"]


def flax_resnet18(num_classes: int = 1000, *, nchw_input: bool = False) -> Any:
    """A flax.linen ResNet-18 (NHWC activations, HWIO kernels, flax's native layout).

    Args:
      num_classes: outputs of the final Dense.
      nchw_input: take torch-layout ``(N, 3, H, W)`` images and transpose them to NHWC inside
        the model (what a flax user with PyTorch-layout data runs); else ``(N, H, W, 3)``.

    Returns:
      A ``flax.linen.Module``: ``apply(variables, x, train=...)`` -> ``(N, num_classes)``.
    """
    import flax.linen as fnn
    import jax
    import jax.numpy as jnp

    def bn(train: bool) -> Any:  # torch's momentum 0.1 is flax's 0.9; torch's eps
        return fnn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)

    class Block(fnn.Module):
        filters: int
        strides: int = 1

        @fnn.compact
        def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
            s = (self.strides, self.strides)
            y = fnn.Conv(self.filters, (3, 3), s, padding=1, use_bias=False)(x)
            y = fnn.relu(bn(train)(y))
            y = fnn.Conv(self.filters, (3, 3), padding=1, use_bias=False)(y)
            y = bn(train)(y)
            if x.shape != y.shape:
                x = fnn.Conv(self.filters, (1, 1), s, use_bias=False)(x)
                x = bn(train)(x)
            return fnn.relu(x + y)

    class ResNet18(fnn.Module):
        classes: int
        nchw: bool

        @fnn.compact
        def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
            if self.nchw:
                x = jnp.transpose(x, (0, 2, 3, 1))
            x = fnn.Conv(64, (7, 7), (2, 2), padding=3, use_bias=False)(x)
            x = fnn.relu(bn(train)(x))
            x = fnn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
            for i, filters in enumerate((64, 128, 256, 512)):
                x = Block(filters, 1 if i == 0 else 2)(x, train)
                x = Block(filters)(x, train)
            return fnn.Dense(self.classes)(jnp.mean(x, axis=(1, 2)))

    return ResNet18(num_classes, nchw_input)


def torch_resnet18(num_classes: int = 1000) -> Any:
    """torchvision's ``resnet18(num_classes=...)``, rebuilt with torchvision's module names.

    Returns:
      A ``torch.nn.Module`` in training mode, default (torchvision) init: NCHW
      ``(N, 3, H, W)`` -> ``(N, num_classes)``; ``state_dict()`` keys as torchvision's.
    """
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            inplanes = 64
            for i, planes in enumerate((64, 128, 256, 512), start=1):
                stride = 1 if i == 1 else 2
                blocks = [BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)]
                setattr(self, f"layer{i}", nn.Sequential(*blocks))
                inplanes = planes
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)
            for m in self.modules():  # torchvision's init
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()
