"""Shape agreement for every layer (as stax's _CheckShapeAgreement): the output shape each
docstring states equals what ``apply`` returns, eagerly, under ``jax.eval_shape`` and under vmap.
"""

from __future__ import annotations

import json
from collections import OrderedDict

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
    # round two: every layer added for porting torch models
    (nn.ReLU6(), (2, 3), (2, 3)),
    (nn.LeakyReLU(0.2), (2, 3), (2, 3)),
    (nn.PReLU(4), (2, 4, 5), (2, 4, 5)),
    (nn.ELU(), (2, 3), (2, 3)),
    (nn.CELU(), (2, 3), (2, 3)),
    (nn.SELU(), (2, 3), (2, 3)),
    (nn.Mish(), (2, 3), (2, 3)),
    (nn.Hardswish(), (2, 3), (2, 3)),
    (nn.Hardsigmoid(), (2, 3), (2, 3)),
    (nn.Hardtanh(), (2, 3), (2, 3)),
    (nn.LogSigmoid(), (2, 3), (2, 3)),
    (nn.Softplus(beta=2.0), (2, 3), (2, 3)),
    (nn.Softsign(), (2, 3), (2, 3)),
    (nn.Tanhshrink(), (2, 3), (2, 3)),
    (nn.Softshrink(), (2, 3), (2, 3)),
    (nn.Hardshrink(), (2, 3), (2, 3)),
    (nn.Threshold(0.1, 2.0), (2, 3), (2, 3)),
    (nn.Softmin(dim=-1), (2, 3), (2, 3)),
    (nn.Softmax2d(), (2, 3, 4, 5), (2, 3, 4, 5)),
    (nn.GLU(), (2, 6), (2, 3)),
    (nn.Dropout1d(0.5), (2, 3, 5), (2, 3, 5)),
    (nn.Dropout2d(0.5), (2, 3, 5, 4), (2, 3, 5, 4)),
    (nn.Dropout3d(0.5), (2, 3, 5, 4, 2), (2, 3, 5, 4, 2)),
    (nn.Upsample(scale_factor=2, mode="bilinear"), (2, 3, 5, 4), (2, 3, 10, 8)),
    (nn.Upsample(size=(7, 3)), (2, 3, 5, 4), (2, 3, 7, 3)),
    (nn.Upsample(scale_factor=1.5, mode="linear"), (2, 3, 5), (2, 3, 7)),
    (nn.UpsamplingNearest2d(scale_factor=3), (2, 3, 5, 4), (2, 3, 15, 12)),
    (nn.UpsamplingBilinear2d(size=(6, 6)), (2, 3, 5, 4), (2, 3, 6, 6)),
    (nn.PixelShuffle(2), (2, 12, 5, 4), (2, 3, 10, 8)),
    (nn.PixelUnshuffle(2), (2, 3, 6, 4), (2, 12, 3, 2)),
    (nn.Conv3d(3, 5, 3, stride=2, padding=1), (2, 3, 7, 6, 5), (2, 5, 4, 3, 3)),
    (nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1), (2, 4, 5), (2, 6, 10)),
    (nn.ConvTranspose3d(2, 3, 2, stride=2), (2, 2, 3, 4, 5), (2, 3, 6, 8, 10)),
    (nn.MaxPool1d(3, 2, 1), (2, 3, 9), (2, 3, 5)),
    (nn.AvgPool1d(2), (2, 3, 9), (2, 3, 4)),
    (nn.MaxPool3d(2), (2, 3, 4, 5, 6), (2, 3, 2, 2, 3)),
    (nn.AvgPool3d(3, 2, 1), (2, 3, 4, 5, 6), (2, 3, 2, 3, 3)),
    (nn.AdaptiveAvgPool1d(3), (2, 3, 10), (2, 3, 3)),
    (nn.AdaptiveAvgPool3d((2, None, 1)), (2, 3, 4, 5, 6), (2, 3, 2, 5, 1)),
    (nn.AdaptiveMaxPool1d(4), (2, 3, 10), (2, 3, 4)),
    (nn.AdaptiveMaxPool2d((3, 2)), (2, 3, 10, 7), (2, 3, 3, 2)),
    (nn.AdaptiveMaxPool3d(2), (2, 3, 4, 5, 6), (2, 3, 2, 2, 2)),
    (nn.BatchNorm3d(3), (2, 3, 4, 5, 2), (2, 3, 4, 5, 2)),
    (nn.InstanceNorm1d(3), (2, 3, 5), (2, 3, 5)),
    (nn.InstanceNorm2d(3, affine=True, track_running_stats=True), (2, 3, 5, 4), (2, 3, 5, 4)),
    (nn.InstanceNorm3d(3), (3, 4, 5, 2), (3, 4, 5, 2)),
    (nn.RMSNorm(6), (2, 5, 6), (2, 5, 6)),
    (nn.LocalResponseNorm(3), (2, 5, 4, 4), (2, 5, 4, 4)),
    (nn.Identity(3, unused=1), (2, 3), (2, 3)),
    (nn.ZeroPad2d((1, 2, 3, 4)), (2, 3, 5, 4), (2, 3, 12, 7)),
    (nn.ConstantPad1d(2, 1.0), (2, 3, 5), (2, 3, 9)),
    (nn.ReflectionPad3d(1), (2, 3, 4, 5, 6), (2, 3, 6, 7, 8)),
    (nn.ReplicationPad1d((0, 3)), (3, 5), (3, 8)),
    (nn.CircularPad2d(1), (2, 3, 5, 4), (2, 3, 7, 6)),
    (nn.ChannelShuffle(2), (2, 4, 3, 3), (2, 4, 3, 3)),
    (nn.Unflatten(1, (2, 3)), (4, 6), (4, 2, 3)),
    (nn.Sequential(OrderedDict([("fc", nn.Linear(3, 4)), ("act", nn.ReLU())])), (2, 3), (2, 4)),
    (nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), (3, 5, 8), (3, 5, 8)),
    (nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2, nn.LayerNorm(8)), (5, 3, 8), (5, 3, 8)),
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


def test_sequence_layers_shapes_agree_with_docstrings():
    # (L, N, E) / (N, L, E) inputs; outputs as each docstring states
    cases = [
        (nn.RNN(3, 5, 2, bidirectional=True), (7, 2, 3), [(7, 2, 10), (4, 2, 5)]),
        (nn.LSTM(3, 5, proj_size=2, batch_first=True), (2, 7, 3), [(2, 7, 2), (1, 2, 2), (1, 2, 5)]),
        (nn.GRU(3, 5, 3), (7, 3), [(7, 5), (3, 5)]),
        (nn.GRUCell(3, 5), (2, 3), [(2, 5)]),
        (nn.LSTMCell(3, 5), (2, 3), [(2, 5), (2, 5)]),
    ]
    for layer, in_shape, out_shapes in cases:
        for train in (False, True):
            params, state = jax.eval_shape(layer.init, jax.random.key(0))
            out, _ = jax.eval_shape(
                lambda p, s, x, layer=layer, train=train: layer.apply(p, s, x, train=train, key=jax.random.key(1)),
                params, state, jax.ShapeDtypeStruct(in_shape, jnp.float32),
            )  # fmt: skip
            assert [v.shape for v in jax.tree.leaves(out)] == out_shapes, layer
    dec = nn.TransformerDecoderLayer(8, 2, 16)
    model = nn.Transformer(8, 2, 1, 1, 16, batch_first=True)
    for m, shapes, want in [(dec, ((4, 3, 8), (6, 3, 8)), (4, 3, 8)), (model, ((3, 6, 8), (3, 4, 8)), (3, 4, 8))]:
        params, state = jax.eval_shape(m.init, jax.random.key(0))
        y, _ = jax.eval_shape(lambda p, a, b, m=m: m.apply(p, {}, a, b), params,
                              *(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes))  # fmt: skip
        assert y.shape == want


@pytest.mark.parametrize(
    "layer",
    [nn.Bilinear(3, 4, 5), nn.ModuleDict({"a": nn.Linear(2, 3)}), nn.GRU(3, 4), nn.LSTMCell(3, 4),
     nn.TransformerDecoderLayer(8, 2), nn.Transformer(8, 2, 1, 1, 16)],
    ids=lambda m: type(m).__name__,
)  # fmt: skip
def test_layers_outside_the_shape_table_are_stored_as_configs_too(layer):
    rebuilt = jaxnets.from_config(json.loads(json.dumps(jaxnets.to_config(layer))))
    assert rebuilt == layer and type(rebuilt) is type(layer) and hash(rebuilt) == hash(layer)


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
