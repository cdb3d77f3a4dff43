"""MultiheadAttention against torch.nn.MultiheadAttention with the same weights and masks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn

E, H = 8, 2


def _pair(batch_first=True, bias=True, dropout=0.0, to_torch=None):
    layer = nn.MultiheadAttention(E, H, dropout=dropout, bias=bias, batch_first=batch_first)
    params, state = layer.init(jax.random.key(0))
    # non-zero biases, so a misplaced bias would show
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), params)
    t = torch.nn.MultiheadAttention(E, H, dropout=dropout, bias=bias, batch_first=batch_first)
    to_torch(layer, params, state, t)
    return layer, params, state, t


def _t(x):
    return None if x is None else torch.from_numpy(np.array(x))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_matches_torch(batch_first, bias, to_torch, close, rng):
    layer, params, state, t = _pair(batch_first, bias, to_torch=to_torch)
    x = rng.standard_normal((3, 5, E) if batch_first else (5, 3, E)).astype(np.float32)
    want_out, want_w = t(_t(x), _t(x), _t(x))
    for train in (False, True):
        (out, w), new_state = layer.apply(params, state, jnp.asarray(x), train=train)
        close(out, want_out)
        close(w, want_w)
        assert out.shape == x.shape and w.shape == (3, 5, 5) and new_state == {}


def test_cross_attention_with_masks_matches_torch(to_torch, close, rng):
    layer, params, state, t = _pair(True, to_torch=to_torch)
    q = rng.standard_normal((2, 4, E)).astype(np.float32)
    k = rng.standard_normal((2, 6, E)).astype(np.float32)
    v = rng.standard_normal((2, 6, E)).astype(np.float32)
    kpm = np.zeros((2, 6), bool)
    kpm[0, 4:] = True
    kpm[1, 0] = True
    causal = np.triu(np.ones((4, 6), bool), k=1)
    want_out, want_w = t(
        _t(q),
        _t(k),
        _t(v),
        key_padding_mask=_t(kpm),
        attn_mask=_t(causal),
        average_attn_weights=False,
    )
    (out, w), _ = layer.apply(
        params,
        state,
        jnp.asarray(q),
        jnp.asarray(k),
        jnp.asarray(v),
        key_padding_mask=jnp.asarray(kpm),
        attn_mask=jnp.asarray(causal),
        average_attn_weights=False,
    )
    assert out.shape == (2, 4, E) and w.shape == (2, H, 4, 6)
    close(out, want_out)
    close(w, want_w)
    assert np.all(np.asarray(w)[0, :, :, 4:] == 0)


def test_float_and_per_head_masks_match_torch(to_torch, close, rng):
    layer, params, state, t = _pair(True, to_torch=to_torch)
    x = rng.standard_normal((2, 5, E)).astype(np.float32)
    mask = rng.standard_normal((2 * H, 5, 5)).astype(np.float32)
    want_out, want_w = t(_t(x), _t(x), _t(x), attn_mask=_t(mask))
    (out, w), _ = layer.apply(params, state, jnp.asarray(x), attn_mask=jnp.asarray(mask))
    close(out, want_out)
    close(w, want_w)


def test_unbatched_and_need_weights_false(to_torch, close, rng):
    layer, params, state, t = _pair(True, to_torch=to_torch)
    x = rng.standard_normal((5, E)).astype(np.float32)
    want_out, _ = t(_t(x), _t(x), _t(x), need_weights=False)
    (out, w), _ = layer.apply(params, state, jnp.asarray(x), need_weights=False)
    assert w is None and out.shape == (5, E)
    close(out, want_out)


def test_params_keys_shapes_and_init_match_torch():
    layer = nn.MultiheadAttention(16, 4)
    params, state = layer.init(jax.random.key(0))
    sd = jaxnets.state_dict(params, state, model=layer)
    t = torch.nn.MultiheadAttention(16, 4)
    want = t.state_dict()
    assert (
        list(sd)
        == list(want)
        == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    )
    for k, v in want.items():
        assert sd[k].shape == tuple(v.shape)
    np.testing.assert_array_equal(sd["in_proj_bias"], 0)
    np.testing.assert_array_equal(sd["out_proj.bias"], 0)
    xavier = math.sqrt(6 / (16 + 48))
    assert np.abs(sd["in_proj_weight"]).max() <= xavier < 1.1 * np.abs(sd["in_proj_weight"]).max()
    assert np.abs(sd["out_proj.weight"]).max() <= 1 / math.sqrt(16)
    assert list(layer.children()) == ["out_proj"] and layer.out_proj == nn.Linear(16, 16)


def test_config_round_trip_rebuilds_the_layer():
    layer = nn.MultiheadAttention(8, 2, dropout=0.1, bias=False, batch_first=True)
    cfg = jaxnets.to_config(layer)
    assert "out_proj" not in cfg["config"]
    assert jaxnets.from_config(cfg) == layer


def test_attention_dropout_needs_key_and_drops_weights():
    layer = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
    params, state = layer.init(jax.random.key(0))
    x = jnp.ones((1, 6, 8))
    with pytest.raises(ValueError, match="MultiheadAttention needs a PRNG key"):
        layer.apply(params, state, x, train=True)
    (_, w), _ = layer.apply(
        params, state, x, train=True, key=jax.random.key(1), average_attn_weights=False
    )
    w = np.asarray(w)
    assert 0.3 < np.mean(w == 0) < 0.7
    np.testing.assert_allclose(
        w[w != 0], 2 / 6, rtol=1e-5
    )  # uniform weights 1/6, scaled by 1/(1-p)
    (_, w_eval), _ = layer.apply(params, state, x)
    np.testing.assert_allclose(np.asarray(w_eval), 1 / 6, rtol=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(
        ValueError, match=r"embed_dim \(10\) must be divisible by num_heads \(3\)"
    ):
        nn.MultiheadAttention(10, 3)
    layer = nn.MultiheadAttention(8, 2, batch_first=True)
    params, state = layer.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(2, 5\)"):
        layer.apply(params, state, jnp.ones((2, 5, 8)), key_padding_mask=jnp.zeros((2, 4), bool))
    with pytest.raises(ValueError, match=r"attn_mask must be \(5, 5\)"):
        layer.apply(params, state, jnp.ones((2, 5, 8)), attn_mask=jnp.zeros((4, 5), bool))


def test_jit_and_grad():
    layer = nn.MultiheadAttention(8, 2, batch_first=True)
    params, state = layer.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    loss = jax.jit(lambda p: jnp.sum(layer.apply(p, state, x, need_weights=False)[0][0] ** 2))
    g = jax.grad(loss)(params)
    assert jax.tree.structure(g) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(g))
