"""jaxnets.models.vit against torchvision's VisionTransformer (tests/models/_torchvision.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from _torchvision import VisionTransformer
from _zoo import check_both_ways, check_files, check_keys, randomize, torch

from jaxnets import models

SMALL = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=24,
             num_classes=5)


def _run(model):
    apply = jax.jit(model.apply)
    return lambda p, s, x: apply(p, s, jnp.asarray(x.numpy()))[0]


def test_vit_b_16_keys_shapes_and_order_are_torchvisions():
    check_keys(models.vit_b_16(), VisionTransformer(224, 16, 12, 12, 768, 3072))


def test_representation_head_keys_are_torchvisions():
    check_keys(models.VisionTransformer(**SMALL, representation_size=12),
               VisionTransformer(**SMALL, representation_size=12))


@pytest.mark.parametrize("representation_size", [None, 12])
def test_small_vit_matches_torchvision_both_ways(representation_size):
    model = models.VisionTransformer(**SMALL, representation_size=representation_size)
    ref = randomize(VisionTransformer(**SMALL, representation_size=representation_size))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    check_both_ways(model, ref, (x,), _run(model), lambda m, x: m(x))


def test_small_vit_round_trips_through_files(tmp_path):
    model, ref = models.VisionTransformer(**SMALL), randomize(VisionTransformer(**SMALL))
    params, state = model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    check_files(tmp_path, model, params, state, {"x": x.numpy()}, "x", _run(model)(params, state, x), ref)


def test_fresh_params_follow_torchvisions_declared_inits():
    params, _ = models.vit_b_16().init(jax.random.key(0))
    assert float(jnp.abs(params["class_token"]).max()) == 0.0
    assert 0.019 < float(jnp.std(params["encoder"]["pos_embedding"])) < 0.021


def test_wrong_image_size_is_a_clear_error():
    model = models.VisionTransformer(**SMALL)
    params, state = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"expected input \(N, 3, 32, 32\), got shape \(1, 3, 64, 64\)"):
        model.apply(params, state, jnp.zeros((1, 3, 64, 64)))
    with pytest.raises(ValueError, match=r"image_size \(30\) must be divisible by patch_size \(8\)"):
        models.VisionTransformer(**{**SMALL, "image_size": 30})
