"""Shape agreement for every layer (as stax's _CheckShapeAgreement): the output shape each
docstring states equals what ``apply`` returns, eagerly, under ``jax.eval_shape`` and under vmap.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

import jaxnets
from jaxnets import nn

# (layer, input shape, output shape as the layer's docstring states it)
CASES = [
    (nn.Conv1d(3, 5, 3, stride=2, padding=1), (2, 3, 9), (2, 5, (9 + 2 - 2 - 1) // 2 + 1)),
    (nn.Conv2d(3, 5, (3, 1), padding="same"), (2, 3, 6, 7), (2, 5, 6, 7)),
    (nn.Conv2d(4, 6, 3, stride=2, dilation=2, groups=2), (2, 4, 11, 9), (2, 6, 4, 3)),
    (
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
        (2, 4, 5, 6),
        (2, 6, 10, 12),
    ),
    (nn.BatchNorm1d(4), (3, 4), (3, 4)),
    (nn.BatchNorm1d(4), (3, 4, 5), (3, 4, 5)),
    (nn.BatchNorm2d(4), (3, 4, 5, 6), (3, 4, 5, 6)),
    (nn.LayerNorm((5, 6)), (3, 4, 5, 6), (3, 4, 5, 6)),
    (nn.GroupNorm(2, 4), (3, 4, 5), (3, 4, 5)),
    (nn.Dropout(0.5), (3, 4, 5), (3, 4, 5)),
    (nn.Embedding(10, 6), (3, 4), (3, 4, 6)),
    (nn.MaxPool2d(3, 2, 1), (2, 3, 9, 8), (2, 3, 5, 4)),
    (nn.MaxPool2d(2, ceil_mode=True), (2, 3, 9, 8), (2, 3, 5, 4)),
    (nn.AvgPool2d(3, 2), (2, 3, 9, 8), (2, 3, 4, 3)),
    (nn.AdaptiveAvgPool2d((3, None)), (2, 3, 10, 7), (2, 3, 3, 7)),
    (nn.ReLU(), (2, 3), (2, 3)),
    (nn.GELU(), (2, 3), (2, 3)),
    (nn.SiLU(), (2, 3), (2, 3)),
    (nn.Tanh(), (2, 3), (2, 3)),
    (nn.Sigmoid(), (2, 3), (2, 3)),
    (nn.Softmax(dim=-1), (2, 3), (2, 3)),
    (nn.LogSoftmax(dim=1), (2, 3), (2, 3)),
]


def _input(layer: nn.Module, shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    dtype = jnp.int32 if isinstance(layer, nn.Embedding) else jnp.float32
    return jax.ShapeDtypeStruct(shape, dtype)


@pytest.mark.parametrize("layer, in_shape, out_shape", CASES, ids=lambda v: repr(v))
@pytest.mark.parametrize("train", [False, True])
def test_output_shape_agrees_with_docstring(layer, in_shape, out_shape, train):
    # traced abstractly (nothing compiled): the shapes are what apply returns for real inputs
    params, state = jax.eval_shape(layer.init, jax.random.key(0))
    y, new_state = jax.eval_shape(
        lambda p, s, x: layer.apply(p, s, x, train=train, key=jax.random.key(1)),
        params,
        state,
        _input(layer, in_shape),
    )
    assert y.shape == out_shape
    assert y.dtype == jnp.float32
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_attention_shapes_agree_with_docstring():
    layer = nn.MultiheadAttention(8, 2, batch_first=True)
    params, state = jax.eval_shape(layer.init, jax.random.key(0))
    q, kv = (
        jax.ShapeDtypeStruct((3, 4, 8), jnp.float32),
        jax.ShapeDtypeStruct((3, 6, 8), jnp.float32),
    )
    (out, w), _ = jax.eval_shape(
        lambda p, q, kv: layer.apply(p, {}, q, kv, average_attn_weights=False), params, q, kv
    )
    assert out.shape == (3, 4, 8) and w.shape == (3, 2, 4, 6)
    seq_first = nn.MultiheadAttention(8, 2)
    q, kv = (
        jax.ShapeDtypeStruct((4, 3, 8), jnp.float32),
        jax.ShapeDtypeStruct((6, 3, 8), jnp.float32),
    )
    (out, w), _ = jax.eval_shape(lambda p, q, kv: seq_first.apply(p, {}, q, kv), params, q, kv)
    assert out.shape == (4, 3, 8) and w.shape == (3, 4, 6)


@pytest.mark.parametrize(
    "layer, in_shape",
    [
        (nn.Conv2d(3, 4, 3), (3, 6, 6)),
        (nn.ConvTranspose2d(3, 4, 3), (3, 6, 6)),
        (nn.MaxPool2d(2), (3, 6, 6)),
        (nn.LayerNorm(6), (3, 6)),
        (nn.MultiheadAttention(8, 2, batch_first=True), (5, 8)),
    ],
    ids=repr,
)
def test_vmap_over_unbatched_inputs_equals_batched_apply(layer, in_shape):
    params, state = jax.jit(layer.init)(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, *in_shape))
    one, many = jax.jit(
        lambda xs: (
            jax.vmap(lambda x: layer.apply(params, state, x)[0])(xs),
            layer.apply(params, state, xs)[0],
        )
    )(xs)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
        assert a.shape == b.shape
        assert jnp.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "layer", [c[0] for c in CASES] + [nn.MultiheadAttention(8, 2, dropout=0.1)], ids=repr
)
def test_every_layer_is_stored_as_a_json_config_and_rebuilt(layer):
    config = jaxnets.to_config(layer)
    rebuilt = jaxnets.from_config(json.loads(json.dumps(config)))
    assert rebuilt == layer and type(rebuilt) is type(layer)
    assert hash(rebuilt) == hash(layer)  # specs are static jit arguments


def test_list_hyperparameters_become_tuples_so_specs_stay_hashable():
    layer = nn.Conv2d(3, 4, [3, 2], stride=[1, 2], padding=[1, 0])
    assert layer.kernel_size == (3, 2) and layer == nn.Conv2d(
        3, 4, (3, 2), stride=(1, 2), padding=(1, 0)
    )
    assert hash(nn.LayerNorm([4, 5])) == hash(nn.LayerNorm((4, 5)))
