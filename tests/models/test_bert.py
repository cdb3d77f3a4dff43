"""jaxnets.models.BertModel against transformers' BertModel (tiny config, random init)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _zoo import check_files, check_keys, close, randomize, to_torch_state_dict, torch

from jaxnets import models

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, type_vocab_size=3)


def _reference(**overrides):
    config = transformers.BertConfig(**{**TINY, **overrides}, attn_implementation="eager")
    return randomize(transformers.BertModel(config, add_pooling_layer=overrides.get("add_pooling_layer", True)))


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY["vocab_size"], (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0  # padding at the end of one sequence
    types = torch.randint(0, TINY["type_vocab_size"], (3, 11), generator=g)
    return ids, mask, types


def _ours(model, params, state, ids, mask, types):
    f = jax.jit(lambda p, s, i, m, t: model.apply(p, s, i, attention_mask=m, token_type_ids=t))
    (h, pooled), _ = f(params, state, *(jnp.asarray(a.numpy()) for a in (ids, mask, types)))
    return h, pooled


def test_keys_shapes_and_order_are_transformers():
    check_keys(models.BertModel(**TINY), _reference())
    check_keys(models.BertModel(**TINY, add_pooling_layer=False), _reference(add_pooling_layer=False))


def test_bert_matches_transformers_both_ways_and_through_files(tmp_path):
    model, ref = models.BertModel(**TINY), _reference()
    ids, mask, types = _inputs()
    params, state = model.load_state_dict(ref.state_dict())
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
    h, pooled = _ours(model, params, state, ids, mask, types)
    keep = mask.numpy().astype(bool)  # transformers' padded positions are not compared
    close(np.asarray(h)[keep], out.last_hidden_state.numpy()[keep])
    close(pooled, out.pooler_output)

    fresh = model.init(jax.random.key(1))  # jaxnets -> transformers, strict
    ref.load_state_dict(to_torch_state_dict(model, *fresh), strict=True)
    with torch.no_grad():
        out = ref(input_ids=ids, token_type_ids=types)
    h, pooled = _ours(model, *fresh, ids, torch.ones_like(mask), types)
    close(h, out.last_hidden_state)
    close(pooled, out.pooler_output)

    np_mask = mask.numpy()
    y = model.apply(params, state, jnp.asarray(ids.numpy()), attention_mask=jnp.asarray(np_mask))[0]
    check_files(tmp_path, model, params, state, {"ids": ids.numpy(), "mask": np_mask}, "ids,mask", y, ref)


def test_default_token_types_and_positions_are_transformers():
    model, ref = models.BertModel(**TINY, hidden_act="gelu_new"), _reference(hidden_act="gelu_new")
    params, state = model.load_state_dict(ref.state_dict())
    ids, _, _ = _inputs(1)
    with torch.no_grad():
        out = ref(input_ids=ids)
    (h, pooled), _ = model.apply(params, state, jnp.asarray(ids.numpy()))
    close(h, out.last_hidden_state)


def test_config_fields_take_a_hugging_face_config():
    config = transformers.BertConfig(**TINY).to_dict()
    model = models.BertModel(**{k: v for k, v in config.items() if k in models.BertModel.config_fields()})
    assert model == models.BertModel(**TINY)


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match=r"hidden_size \(30\) must be a multiple of num_attention_heads \(4\)"):
        models.BertModel(**{**TINY, "hidden_size": 30})
    with pytest.raises(ValueError, match=r"activation 'tanhh' is not supported; use one of"):
        models.BertModel(**TINY, hidden_act="tanhh")
    model = models.BertModel(**TINY)
    params, state = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match="sequence length 65 is longer than max_position_embeddings"):
        model.apply(params, state, jnp.zeros((1, 65), jnp.int32))
