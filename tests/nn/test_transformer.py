"""Transformer layers, stacks and the full Transformer against torch.nn: keys, strict loads both
ways, outputs with masks in train (dropout 0) and eval mode, init, configs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn

E, H, FF = 8, 2, 16

pytestmark = [  # torch's own notes about its fast paths, not about these tests
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning"),
    pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning"),
]


def _perturb_torch(t: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial values everywhere (torch starts biases at 0 and norms at 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return t


def _from_torch(model: nn.Module, t: torch.nn.Module, close=None):
    """torch -> jaxnets strictly, and back to a fresh torch module strictly, same keys in order."""
    params, state = jaxnets.load_state_dict(model, t.state_dict())
    sd = model.state_dict(params, state)
    assert list(sd) == list(t.state_dict())
    t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    return params, state


def _t(x):
    return None if x is None else torch.from_numpy(np.array(x))


def _compare(model, params, t, args, kwargs, torch_kwargs, close, valid=None):
    for train in (False, True):
        t.train(train)
        with torch.no_grad():
            want = t(*map(_t, args), **{k: _t(v) if not isinstance(v, bool) else v for k, v in torch_kwargs.items()})
        y, state = model.apply(params, {}, *map(jnp.asarray, args), train=train, **kwargs)
        if valid is not None and not train:  # torch's eval fast path zeroes padded positions
            y, want = np.asarray(y)[valid], want.numpy()[valid]
        close(y, want, rtol=2e-5, atol=2e-5)


LAYER_ARGS = [
    dict(),
    dict(norm_first=True, activation="gelu"),
    dict(batch_first=True, bias=False),
    dict(batch_first=True, norm_first=True, layer_norm_eps=1e-3),
]


def _masks(rng, n, s, batch_first):
    causal = np.triu(np.ones((s, s), bool), k=1)
    pad = np.zeros((n, s), bool)
    pad[0, -2:] = True
    valid = ~pad if batch_first else ~pad.T
    return causal, pad, valid


@pytest.mark.parametrize("kwargs", LAYER_ARGS, ids=str)
def test_encoder_layer_matches_torch(kwargs, close, rng):
    model = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, **kwargs)
    t = _perturb_torch(torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, **kwargs))
    params, _ = _from_torch(model, t)
    bf = kwargs.get("batch_first", False)
    x = rng.standard_normal((3, 5, E) if bf else (5, 3, E)).astype(np.float32)
    causal, pad, valid = _masks(rng, 3, 5, bf)
    _compare(model, params, t, (x,), {}, {}, close)
    masks = dict(src_mask=causal, src_key_padding_mask=pad)
    _compare(model, params, t, (x,), masks, masks, close, valid)


@pytest.mark.parametrize("kwargs", LAYER_ARGS, ids=str)
def test_decoder_layer_matches_torch(kwargs, close, rng):
    model = nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, **kwargs)
    t = _perturb_torch(torch.nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, **kwargs))
    params, _ = _from_torch(model, t)
    bf = kwargs.get("batch_first", False)
    tgt = rng.standard_normal((3, 4, E) if bf else (4, 3, E)).astype(np.float32)
    mem = rng.standard_normal((3, 6, E) if bf else (6, 3, E)).astype(np.float32)
    causal, tgt_pad, _ = _masks(rng, 3, 4, bf)
    mem_pad = np.zeros((3, 6), bool)
    mem_pad[1, :2] = True
    memory_mask = rng.standard_normal((4, 6)).astype(np.float32)  # a float mask is added
    masks = dict(
        tgt_mask=causal, memory_mask=memory_mask, tgt_key_padding_mask=tgt_pad,
        memory_key_padding_mask=mem_pad,
    )  # fmt: skip
    _compare(model, params, t, (tgt, mem), masks, masks, close)


def test_encoder_and_decoder_layer_keys_are_torchs():
    enc = nn.TransformerEncoderLayer(E, H, FF)
    dec = nn.TransformerDecoderLayer(E, H, FF)
    for j, t in ((enc, torch.nn.TransformerEncoderLayer(E, H, FF)), (dec, torch.nn.TransformerDecoderLayer(E, H, FF))):
        params, state = j.init(jax.random.key(0))
        sd = j.state_dict(params, state)
        assert list(sd) == list(t.state_dict())
        assert all(sd[k].shape == tuple(v.shape) for k, v in t.state_dict().items())
        t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)


def test_a_module_activation_is_a_child_with_torchs_key(close, rng):
    model = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, activation=nn.PReLU())
    t = _perturb_torch(torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, activation=torch.nn.PReLU()))
    params, _ = _from_torch(model, t)
    assert "activation.weight" in model.state_dict(params, {})
    _compare(model, params, t, (rng.standard_normal((5, 3, E)).astype(np.float32),), {}, {}, close)
    tanh = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, activation=nn.GELU("tanh"))
    t = _perturb_torch(
        torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, activation=torch.nn.GELU("tanh"))
    )
    params, _ = _from_torch(tanh, t)
    _compare(tanh, params, t, (rng.standard_normal((5, 3, E)).astype(np.float32),), {}, {}, close)


def test_encoder_stack_matches_torch_with_final_norm(close, rng):
    layer = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(E))
    tl = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True)
    t = _perturb_torch(torch.nn.TransformerEncoder(tl, 2, norm=torch.nn.LayerNorm(E), enable_nested_tensor=False))
    params, _ = _from_torch(model, t)
    assert list(model.state_dict(params, {}))[0] == "layers.0.self_attn.in_proj_weight"
    x = rng.standard_normal((3, 5, E)).astype(np.float32)
    causal, pad, valid = _masks(rng, 3, 5, True)
    _compare(model, params, t, (x,), dict(mask=causal, src_key_padding_mask=pad), dict(mask=causal, src_key_padding_mask=pad), close)
    # torch's nested-tensor eval path returns 0 at padded positions; the rest agree
    t_nested = torch.nn.TransformerEncoder(tl, 2, norm=torch.nn.LayerNorm(E))
    t_nested.load_state_dict(t.state_dict())
    _compare(model, params, t_nested, (x,), dict(src_key_padding_mask=pad), dict(src_key_padding_mask=pad), close, valid)


def test_decoder_stack_matches_torch(close, rng):
    layer = nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, norm_first=True)
    model = nn.TransformerDecoder(layer, 2)
    t = _perturb_torch(torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, norm_first=True), 2))
    params, _ = _from_torch(model, t)
    tgt = rng.standard_normal((4, 3, E)).astype(np.float32)
    mem = rng.standard_normal((6, 3, E)).astype(np.float32)
    causal = np.asarray(nn.Transformer.generate_square_subsequent_mask(4))
    np.testing.assert_array_equal(causal, torch.nn.Transformer.generate_square_subsequent_mask(4).numpy())
    masks = dict(tgt_mask=causal, tgt_is_causal=True)
    _compare(model, params, t, (tgt, mem), masks, masks, close)


def test_stacks_start_from_identical_layers_as_torchs_deep_copies():
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, FF), 3)
    params, _ = model.init(jax.random.key(0))
    layers = params["layers"]
    assert set(layers) == {"0", "1", "2"} and "norm" not in params
    for k in ("0", "1"):
        assert all(
            bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(layers[k]), jax.tree.leaves(layers["2"]))
        )


def test_full_transformer_keys_init_and_outputs_match_torch(close, rng):
    kw = dict(d_model=E, nhead=H, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=FF, dropout=0.0)
    model = nn.Transformer(**kw)
    t = torch.nn.Transformer(**kw)
    params, state = model.init(jax.random.key(0))
    sd = model.state_dict(params, state)
    assert list(sd) == list(t.state_dict())
    # torch's _reset_parameters: xavier_uniform_ on every param with 2+ dims, so layers differ
    w0, w1 = sd["encoder.layers.0.linear1.weight"], sd["encoder.layers.1.linear1.weight"]
    assert not np.allclose(w0, w1) and float(np.abs(w0).max()) <= np.sqrt(6 / (E + FF))
    assert float(np.abs(w0).max()) > 0.8 * np.sqrt(6 / (E + FF))
    np.testing.assert_array_equal(sd["encoder.norm.weight"], np.ones(E))
    params, _ = _from_torch(model, _perturb_torch(t))
    src = rng.standard_normal((6, 3, E)).astype(np.float32)
    tgt = rng.standard_normal((4, 3, E)).astype(np.float32)
    causal = np.asarray(nn.Transformer.generate_square_subsequent_mask(4))
    src_pad = np.zeros((3, 6), bool)
    src_pad[2, 4:] = True
    masks = dict(tgt_mask=causal, src_key_padding_mask=src_pad, memory_key_padding_mask=src_pad)
    _compare(model, params, t, (src, tgt), masks, masks, close)


def test_is_causal_without_a_mask_applies_the_causal_mask(rng):
    model = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True)
    params, state = model.init(jax.random.key(0))
    x = jnp.asarray(rng.standard_normal((2, 5, E)).astype(np.float32))
    hinted, _ = model.apply(params, state, x, is_causal=True)
    masked, _ = model.apply(params, state, x, src_mask=nn.Transformer.generate_square_subsequent_mask(5))
    np.testing.assert_array_equal(np.asarray(hinted), np.asarray(masked))
    # causal: the first position does not see the others
    changed = x.at[:, 1:].set(0.0)
    np.testing.assert_allclose(model.apply(params, state, changed, is_causal=True)[0][:, 0], hinted[:, 0], rtol=1e-6)


def test_dropout_in_training_needs_a_key_and_is_reproducible(rng):
    model = nn.Transformer(E, H, 1, 1, FF, dropout=0.3, batch_first=True)
    params, state = model.init(jax.random.key(0))
    src = jnp.asarray(rng.standard_normal((2, 5, E)).astype(np.float32))
    tgt = jnp.asarray(rng.standard_normal((2, 3, E)).astype(np.float32))
    with pytest.raises(ValueError, match="needs a PRNG key when train=True"):
        model.apply(params, state, src, tgt, train=True)
    a, _ = model.apply(params, state, src, tgt, train=True, key=jax.random.key(1))
    b, _ = model.apply(params, state, src, tgt, train=True, key=jax.random.key(1))
    c, _ = model.apply(params, state, src, tgt, train=True, key=jax.random.key(2))
    e, _ = model.apply(params, state, src, tgt)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(a, c) and not np.allclose(a, e)


@pytest.mark.parametrize(
    "model",
    [
        nn.TransformerEncoderLayer(E, H, FF, activation="gelu", norm_first=True),
        nn.TransformerDecoderLayer(E, H, FF, activation=nn.GELU("tanh")),
        nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, FF), 2, nn.LayerNorm(E)),
        nn.TransformerDecoder(nn.TransformerDecoderLayer(E, H, FF), 2),
        nn.Transformer(E, H, 1, 1, FF),
        nn.Transformer(E, H, custom_encoder=nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, FF), 1), num_decoder_layers=1),
    ],
    ids=lambda m: type(m).__name__,
)
def test_config_round_trip(model):
    rebuilt = jaxnets.from_config(json.loads(json.dumps(jaxnets.to_config(model))))
    assert rebuilt == model and hash(rebuilt) == hash(model)
    p1, _ = jax.eval_shape(model.init, jax.random.key(0))
    p2, _ = jax.eval_shape(rebuilt.init, jax.random.key(0))
    assert jax.tree.structure(p1) == jax.tree.structure(p2)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="activation must be 'relu', 'gelu' or a jaxnets layer"):
        nn.TransformerEncoderLayer(E, H, activation=jax.nn.relu)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        nn.TransformerEncoderLayer(E, 3)
    model = nn.Transformer(E, H, 1, 1, FF)
    params, state = jax.eval_shape(model.init, jax.random.key(0))
    with pytest.raises(ValueError, match="batch sizes of src .* and tgt .* must be equal"):
        model.apply(params, state, jnp.ones((5, 2, E)), jnp.ones((4, 3, E)))
    with pytest.raises(ValueError, match="must equal d_model = 8"):
        model.apply(params, state, jnp.ones((5, 2, 6)), jnp.ones((4, 2, 6)))
