"""jaxnets.models.mobilenetv3 against torchvision's MobileNetV3 (tests/models/_torchvision.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from _torchvision import MobileNetV3, mobilenet_v3_conf
from _zoo import check_both_ways, check_files, check_keys, randomize, torch

from jaxnets import models


def _torch(arch: str, num_classes: int = 1000, **kw) -> MobileNetV3:
    setting, last = mobilenet_v3_conf(f"mobilenet_v3_{arch}", **kw)
    return MobileNetV3(setting, last, num_classes=num_classes)


def _run(model):
    apply = jax.jit(model.apply)
    return lambda p, s, x: apply(p, s, jnp.asarray(x.numpy()))[0]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (models.mobilenet_v3_small, lambda: _torch("small")),
        (models.mobilenet_v3_large, lambda: _torch("large")),
        (lambda: models.MobileNetV3("large", 10, width_mult=0.75, reduced_tail=True, dilated=True),
         lambda: _torch("large", 10, width_mult=0.75, reduced_tail=True, dilated=True)),
    ],
    ids=["small", "large", "large-0.75-reduced-dilated"],
)
def test_keys_shapes_and_order_are_torchvisions(ours, theirs):
    check_keys(ours(), theirs())


def test_mobilenet_v3_small_matches_torchvision_both_ways_and_through_files(tmp_path):
    model, ref = models.mobilenet_v3_small(), randomize(_torch("small"))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    params, state = check_both_ways(model, ref, (x,), _run(model), lambda m, x: m(x))
    check_files(tmp_path, model, params, state, {"x": x.numpy()}, "x", _run(model)(params, state, x), ref)


def test_bad_arch_says_what_is_accepted():
    with pytest.raises(ValueError, match="arch must be 'small' or 'large', got 'tiny'"):
        models.MobileNetV3("tiny")
