"""jaxnets.models.GPT2Model against transformers' GPT2Model (tiny config, random init)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _zoo import check_files, check_keys, close, randomize, to_torch_state_dict, torch

from jaxnets import models

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, n_positions=32, n_embd=32, n_layer=2, n_head=4)


def _reference(**overrides):
    config = transformers.GPT2Config(**{**TINY, **overrides}, attn_implementation="eager")
    return randomize(transformers.GPT2Model(config))


def _ours(model, params, state, ids, mask=None):
    f = jax.jit(lambda p, s, i, m: model.apply(p, s, i, attention_mask=m))
    m = None if mask is None else jnp.asarray(mask.numpy())
    return f(params, state, jnp.asarray(ids.numpy()), m)[0]


def test_keys_shapes_and_order_are_transformers():
    check_keys(models.GPT2Model(**TINY), _reference())


def test_conv1d_weights_are_stored_in_features_first_as_transformers():
    from transformers.pytorch_utils import Conv1D

    ours, _ = models.Conv1D(7, 5).init(jax.random.key(0))
    theirs = Conv1D(7, 5)
    assert ours["weight"].shape == tuple(theirs.weight.shape) == (5, 7)
    x = torch.randn(2, 3, 5)
    params, _ = models.Conv1D(7, 5).load_state_dict(theirs.state_dict())
    close(models.Conv1D(7, 5).apply(params, {}, jnp.asarray(x.numpy()))[0], theirs(x))


def test_gpt2_matches_transformers_both_ways_and_through_files(tmp_path):
    model, ref = models.GPT2Model(**TINY), _reference()
    ids = torch.randint(0, TINY["vocab_size"], (2, 13), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, 9:] = 0  # right padding
    params, state = model.load_state_dict(ref.state_dict())
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    keep = mask.numpy().astype(bool)
    close(np.asarray(_ours(model, params, state, ids, mask))[keep], want[keep])
    with torch.no_grad():
        close(_ours(model, params, state, ids), ref(input_ids=ids).last_hidden_state)

    fresh = model.init(jax.random.key(1))  # jaxnets -> transformers, strict
    ref.load_state_dict(to_torch_state_dict(model, *fresh), strict=True)
    with torch.no_grad():
        close(_ours(model, *fresh, ids), ref(input_ids=ids).last_hidden_state)

    y = _ours(model, params, state, ids, mask)
    check_files(tmp_path, model, params, state, {"ids": ids.numpy(), "mask": mask.numpy()},
                "ids,mask", y, ref)


@pytest.mark.parametrize("overrides", [
    dict(activation_function="relu", n_inner=48, scale_attn_by_inverse_layer_idx=True),
    dict(scale_attn_weights=False, layer_norm_epsilon=1e-3),
])
def test_config_options_match_transformers(overrides):
    model, ref = models.GPT2Model(**TINY, **overrides), _reference(**overrides)
    params, state = model.load_state_dict(ref.state_dict())
    ids = torch.randint(0, TINY["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(1))
    types = torch.randint(0, 3, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = ref(input_ids=ids, token_type_ids=types).last_hidden_state
    got, _ = model.apply(params, state, jnp.asarray(ids.numpy()),
                         token_type_ids=jnp.asarray(types.numpy()))
    close(got, want)


def test_a_linear_built_gpt2_needs_the_transposed_weights():
    # What docs/migrating_from_pytorch.md shows: Conv1D (in, out) vs nn.Linear (out, in).
    from jaxnets import nn

    sd = {k: v.numpy() for k, v in _reference().state_dict().items()}
    w = sd["h.0.mlp.c_fc.weight"]  # (32, 128): in, out
    lin = nn.Linear(32, 128)
    with pytest.raises(Exception, match=r"weight: shape \(32, 128\) in the state_dict, \(128, 32\)"):
        lin.load_state_dict({"weight": w, "bias": sd["h.0.mlp.c_fc.bias"]})
    params, _ = lin.load_state_dict({"weight": w.T, "bias": sd["h.0.mlp.c_fc.bias"]})
    x = np.random.default_rng(0).normal(size=(2, 32)).astype(np.float32)
    close(lin.apply(params, {}, jnp.asarray(x))[0], x @ w + sd["h.0.mlp.c_fc.bias"])


def test_config_fields_take_a_hugging_face_config():
    config = transformers.GPT2Config(**TINY).to_dict()
    model = models.GPT2Model(**{k: v for k, v in config.items() if k in models.GPT2Model.config_fields()})
    assert model == models.GPT2Model(**TINY)


def test_too_long_sequences_are_a_clear_error():
    model = models.GPT2Model(**TINY)
    params, state = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"sequence length 33 is longer than n_positions \(32\)"):
        model.apply(params, state, jnp.zeros((1, 33), jnp.int32))


def test_a_square_weight_loads_untransposed_without_error_and_gives_wrong_numbers():
    # The structure check cannot see a transposed square weight (attn.c_proj is (E, E)); the
    # docs warn about it. Conv1D computes x @ W, nn.Linear x @ W.T.
    from jaxnets import nn

    sd = {k: v.numpy() for k, v in _reference().state_dict().items()}
    w, b = sd["h.0.attn.c_proj.weight"], sd["h.0.attn.c_proj.bias"]
    lin = nn.Linear(32, 32)
    params, _ = lin.load_state_dict({"weight": w, "bias": b})  # no error
    x = np.random.default_rng(1).normal(size=(2, 32)).astype(np.float32)
    assert not np.allclose(lin.apply(params, {}, jnp.asarray(x))[0], x @ w + b, atol=1e-3)
    params, _ = lin.load_state_dict({"weight": w.T, "bias": b})
    close(lin.apply(params, {}, jnp.asarray(x))[0], x @ w + b)
