"""jaxnets.models.resnet against torchvision's ResNet (tests/models/_torchvision.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _torchvision import BasicBlock, Bottleneck
from _torchvision import ResNet as TorchResNet
from _zoo import check_both_ways, check_files, check_keys, close, randomize, torch

from jaxnets import models


def _run(model):
    apply = jax.jit(model.apply)
    return lambda p, s, x: apply(p, s, jnp.asarray(x.numpy()))[0]


def _ref(m, x):
    return m(x)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (models.resnet18, lambda: TorchResNet(BasicBlock, [2, 2, 2, 2])),
        (models.resnet50, lambda: TorchResNet(Bottleneck, [3, 4, 6, 3])),
        (lambda: models.ResNet("bottleneck", (1, 1, 1, 1), 10, groups=4, width_per_group=8),
         lambda: TorchResNet(Bottleneck, [1, 1, 1, 1], 10, groups=4, width_per_group=8)),
    ],
    ids=["resnet18", "resnet50", "resnext-small"],
)
def test_keys_shapes_and_order_are_torchvisions(ours, theirs):
    check_keys(ours(), theirs())


def test_resnet18_matches_torchvision_both_ways_and_through_files(tmp_path):
    model, ref = models.resnet18(), randomize(TorchResNet(BasicBlock, [2, 2, 2, 2]))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    params, state = check_both_ways(model, ref, (x,), _run(model), _ref)
    y = _run(model)(params, state, x)
    check_files(tmp_path, model, params, state, {"x": x.numpy()}, "x", y, ref)


def test_bottleneck_resnet_matches_torchvision_both_ways():
    model = models.ResNet("bottleneck", (1, 2, 1, 1), num_classes=7)
    ref = randomize(TorchResNet(Bottleneck, [1, 2, 1, 1], num_classes=7))
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    check_both_ways(model, ref, (x,), _run(model), _ref)


def test_training_step_updates_batchnorm_like_torch():
    model = models.ResNet("basic", (1, 1, 1, 1), num_classes=5)
    ref = randomize(TorchResNet(BasicBlock, [1, 1, 1, 1], num_classes=5)).train()
    params, state = model.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y, new_state = jax.jit(lambda p, s, x: model.apply(p, s, x, train=True))(
        params, state, jnp.asarray(x.numpy())
    )
    with torch.no_grad():
        close(y, ref(x), atol=1e-4, rtol=1e-4)
    ours = model.state_dict(params, new_state)
    for k, v in ref.state_dict().items():
        if "running" in k or "num_batches" in k:
            np.testing.assert_allclose(ours[k], v.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)


def test_bad_hyperparameters_say_what_is_accepted():
    with pytest.raises(ValueError, match="block must be 'basic' or 'bottleneck', got 'wide'"):
        models.ResNet("wide")
    with pytest.raises(ValueError, match=r"layers must be 4 positive ints, got \(2, 2\)"):
        models.ResNet("basic", (2, 2))
