"""MobileNetV3 with torchvision's module names, so torchvision's state_dicts load strictly.

``mobilenet_v3_small()``/``mobilenet_v3_large()`` build torchvision's structures: keys
``features.0.0.weight`` (stem conv), ``features.1.block.0.0.weight`` (a depthwise conv),
``features.1.block.1.fc1.weight`` (squeeze-excitation), ``classifier.0.weight`` ... NCHW inputs.
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
    Dropout,
    Hardsigmoid,
    Hardswish,
    Linear,
    Module,
    Params,
    ReLU,
    Sequential,
    State,
)
from jaxnets.nn.module import Key, Output

__all__ = ["InvertedResidual", "SqueezeExcitation", "MobileNetV3", "mobilenet_v3_small",
           "mobilenet_v3_large"]


def _act(use_hs: bool) -> Module:
    return Hardswish() if use_hs else ReLU()


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, at most 10% down."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             dilation: int = 1, act: Module | None = None) -> Sequential:
    """torchvision's ``Conv2dNormActivation`` with MobileNetV3's BatchNorm (eps 1e-3, momentum 0.01)."""
    padding = (kernel - 1) // 2 * dilation
    layers: list[Module] = [
        Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
               bias=False),
        BatchNorm2d(cout, eps=0.001, momentum=0.01),
    ]
    if act is not None:
        layers.append(act)
    return Sequential(*layers)


@register(name="models.SqueezeExcitation")
class SqueezeExcitation(Module):
    """torchvision.ops' ``SqueezeExcitation`` with MobileNetV3's hard-sigmoid gate.

    Params: ``fc1`` (1x1 conv ``input_channels -> squeeze_channels``), ``fc2`` (back).
    Shapes: ``(N, C, H, W)`` -> same.
    """

    input_channels: int
    squeeze_channels: int
    avgpool: AdaptiveAvgPool2d = field(init=False, repr=False)
    fc1: Conv2d = field(init=False, repr=False)
    fc2: Conv2d = field(init=False, repr=False)
    activation: ReLU = field(init=False, repr=False)
    scale_activation: Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        build(
            self,
            avgpool=AdaptiveAvgPool2d(1),
            fc1=Conv2d(self.input_channels, self.squeeze_channels, 1),
            fc2=Conv2d(self.squeeze_channels, self.input_channels, 1),
            activation=ReLU(),
            scale_activation=Hardsigmoid(),
        )

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        m = self.bind(params, state, train=train, key=key)
        scale = m.scale_activation(m.fc2(m.activation(m.fc1(m.avgpool(x)))))
        return scale * x, m.state


@register(name="models.InvertedResidual")
class InvertedResidual(Module):
    """torchvision's MobileNetV3 ``InvertedResidual``: expand (1x1), depthwise, SE, project.

    Fields follow torchvision's ``InvertedResidualConfig`` after width adjustment. Keys:
    ``block.0`` ... (the expand conv only when ``expanded_channels != input_channels``).
    Shapes: ``(N, input_channels, H, W)`` -> ``(N, out_channels, H/stride, W/stride)``.
    """

    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    use_hs: bool
    stride: int
    dilation: int = 1
    block: Sequential = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.stride not in (1, 2):
            raise ValueError(f"InvertedResidual: stride must be 1 or 2, got {self.stride}.")
        layers: list[Module] = []
        if self.expanded_channels != self.input_channels:
            layers.append(_conv_bn(self.input_channels, self.expanded_channels, 1,
                                   act=_act(self.use_hs)))
        stride = 1 if self.dilation > 1 else self.stride
        layers.append(_conv_bn(self.expanded_channels, self.expanded_channels, self.kernel,
                               stride=stride, groups=self.expanded_channels,
                               dilation=self.dilation, act=_act(self.use_hs)))
        if self.use_se:
            layers.append(SqueezeExcitation(self.expanded_channels,
                                            _make_divisible(self.expanded_channels // 4, 8)))
        layers.append(_conv_bn(self.expanded_channels, self.out_channels, 1))
        build(self, block=Sequential(*layers))

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        m = self.bind(params, state, train=train, key=key)
        y = m.block(x)
        if self.stride == 1 and self.input_channels == self.out_channels:
            y = y + x
        return y, m.state


def _settings(arch: str, d: int, dil: int) -> list[tuple[int, int, int, int, bool, bool, int, int]]:
    """torchvision's table: (input, kernel, expanded, out, use_se, use_hs, stride, dilation).

    ``d`` divides the last stage's channels (``reduced_tail``), ``dil`` dilates it, exactly where
    torchvision's ``_mobilenet_v3_conf`` does.
    """
    if arch == "small":
        return [
            (16, 3, 16, 16, True, False, 2, 1),
            (16, 3, 72, 24, False, False, 2, 1),
            (24, 3, 88, 24, False, False, 1, 1),
            (24, 5, 96, 40, True, True, 2, 1),
            (40, 5, 240, 40, True, True, 1, 1),
            (40, 5, 240, 40, True, True, 1, 1),
            (40, 5, 120, 48, True, True, 1, 1),
            (48, 5, 144, 48, True, True, 1, 1),
            (48, 5, 288 // d, 96 // d, True, True, 2, dil),
            (96 // d, 5, 576 // d, 96 // d, True, True, 1, dil),
            (96 // d, 5, 576 // d, 96 // d, True, True, 1, dil),
        ]
    return [
        (16, 3, 16, 16, False, False, 1, 1),
        (16, 3, 64, 24, False, False, 2, 1),
        (24, 3, 72, 24, False, False, 1, 1),
        (24, 5, 72, 40, True, False, 2, 1),
        (40, 5, 120, 40, True, False, 1, 1),
        (40, 5, 120, 40, True, False, 1, 1),
        (40, 3, 240, 80, False, True, 2, 1),
        (80, 3, 200, 80, False, True, 1, 1),
        (80, 3, 184, 80, False, True, 1, 1),
        (80, 3, 184, 80, False, True, 1, 1),
        (80, 3, 480, 112, True, True, 1, 1),
        (112, 3, 672, 112, True, True, 1, 1),
        (112, 5, 672, 160 // d, True, True, 2, dil),
        (160 // d, 5, 960 // d, 160 // d, True, True, 1, dil),
        (160 // d, 5, 960 // d, 160 // d, True, True, 1, dil),
    ]


_LAST = {"small": 1024, "large": 1280}


@register(name="models.MobileNetV3")
class MobileNetV3(Module):
    """torchvision's ``mobilenet_v3_small``/``mobilenet_v3_large`` structure.

    Args:
      arch: ``"small"`` or ``"large"``.
      num_classes: outputs of the classifier.
      width_mult: channel multiplier (channels rounded to multiples of 8, as torchvision).
      dropout: of the classifier, in training (torchvision's default 0.2).
      reduced_tail, dilated: torchvision's options of the last stage (halve its channels; dilate
        instead of striding).

    Shapes: ``(N, 3, H, W)`` -> ``(N, num_classes)`` logits. Fresh params use each layer's
    PyTorch default init (torchvision re-draws convs with ``kaiming_normal_(mode="fan_out")``).

    Raises:
      ValueError: an unknown ``arch``.
    """

    arch: str = "small"
    num_classes: int = 1000
    width_mult: float = 1.0
    dropout: float = 0.2
    reduced_tail: bool = False
    dilated: bool = False
    features: Sequential = field(init=False, repr=False)
    avgpool: AdaptiveAvgPool2d = field(init=False, repr=False)
    classifier: Sequential = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.arch not in _LAST:
            raise ValueError(f"MobileNetV3: arch must be 'small' or 'large', got {self.arch!r}.")
        div = 2 if self.reduced_tail else 1
        settings = _settings(self.arch, div, 2 if self.dilated else 1)

        def ch(c: int) -> int:
            return _make_divisible(c * self.width_mult, 8)

        blocks: list[Module] = [
            InvertedResidual(ch(cin), k, ch(exp), ch(cout), se, hs, stride, dil)
            for cin, k, exp, cout, se, hs, stride, dil in settings
        ]
        first = ch(settings[0][0])
        last_in = blocks[-1].out_channels  # type: ignore[attr-defined]
        last_channel = _make_divisible(_LAST[self.arch] // div * self.width_mult, 8)
        build(
            self,
            features=Sequential(
                _conv_bn(3, first, 3, stride=2, act=Hardswish()),
                *blocks,
                _conv_bn(last_in, 6 * last_in, 1, act=Hardswish()),
            ),
            avgpool=AdaptiveAvgPool2d(1),
            classifier=Sequential(
                Linear(6 * last_in, last_channel),
                Hardswish(),
                Dropout(self.dropout),
                Linear(last_channel, self.num_classes),
            ),
        )

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        m = self.bind(params, state, train=train, key=key)
        x = m.avgpool(m.features(x))
        return m.classifier(jax.numpy.reshape(x, (x.shape[0], -1))), m.state


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    """torchvision's ``mobilenet_v3_small`` structure (2.5M params at 1000 classes)."""
    return MobileNetV3("small", num_classes)


def mobilenet_v3_large(num_classes: int = 1000) -> MobileNetV3:
    """torchvision's ``mobilenet_v3_large`` structure (5.5M params at 1000 classes)."""
    return MobileNetV3("large", num_classes)
