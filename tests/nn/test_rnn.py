"""RNN, LSTM, GRU and their cells against torch.nn: keys, strict loads both ways, outputs and
final states in train (dropout 0) and eval mode, initial states, init bounds, configs."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn

IN, HID = 3, 5

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

CASES = [
    (nn.RNN, torch.nn.RNN, dict()),
    (nn.RNN, torch.nn.RNN, dict(num_layers=2, nonlinearity="relu", bidirectional=True)),
    (nn.LSTM, torch.nn.LSTM, dict()),
    (nn.LSTM, torch.nn.LSTM, dict(num_layers=2, bidirectional=True, batch_first=True)),
    (nn.LSTM, torch.nn.LSTM, dict(num_layers=2, proj_size=3, bias=False)),
    (nn.GRU, torch.nn.GRU, dict()),
    (nn.GRU, torch.nn.GRU, dict(num_layers=3, bidirectional=True, batch_first=True)),
]


def _t(x):
    return torch.from_numpy(np.array(x))


def _pair(jcls, tcls, kwargs):
    model = jcls(IN, HID, **kwargs)
    torch.manual_seed(0)
    t = tcls(IN, HID, **kwargs)
    params, state = jaxnets.load_state_dict(model, t.state_dict())  # torch -> jaxnets, strict
    sd = model.state_dict(params, state)
    assert list(sd) == list(t.state_dict())
    t.load_state_dict({k: _t(v) for k, v in sd.items()}, strict=True)  # and back
    return model, params, state, t


def _flat(out):
    return [np.asarray(v) for v in jax.tree.leaves(out)]


def _torch_flat(out):
    return [v.detach().numpy() for v in jax.tree.leaves(out, is_leaf=lambda v: isinstance(v, torch.Tensor))]


@pytest.mark.parametrize("jcls, tcls, kwargs", CASES, ids=lambda v: str(v))
def test_matches_torch_with_and_without_initial_state(jcls, tcls, kwargs, close, rng):
    model, params, state, t = _pair(jcls, tcls, kwargs)
    bf = kwargs.get("batch_first", False)
    x = rng.standard_normal((2, 7, IN) if bf else (7, 2, IN)).astype(np.float32)
    d = (2 if kwargs.get("bidirectional") else 1) * kwargs.get("num_layers", 1)
    h0 = rng.standard_normal((d, 2, kwargs.get("proj_size") or HID)).astype(np.float32)
    c0 = rng.standard_normal((d, 2, HID)).astype(np.float32)
    hx = (h0, c0) if jcls is nn.LSTM else h0
    for train in (False, True):
        t.train(train)
        for initial in (None, hx):
            want = t(_t(x)) if initial is None else t(_t(x), jax.tree.map(_t, initial))
            got, new_state = model.apply(
                params, state, jnp.asarray(x), None if initial is None else jax.tree.map(jnp.asarray, initial), train=train
            )
            assert jax.tree.structure(got) == jax.tree.structure(jax.tree.map(lambda v: 0, want, is_leaf=lambda v: isinstance(v, torch.Tensor)))
            for a, b in zip(_flat(got), _torch_flat(want)):
                assert a.shape == b.shape
                close(a, b)
            assert new_state == {}


@pytest.mark.parametrize("jcls, tcls", [(nn.RNN, torch.nn.RNN), (nn.LSTM, torch.nn.LSTM), (nn.GRU, torch.nn.GRU)])
def test_unbatched_input_matches_torch(jcls, tcls, close, rng):
    model, params, state, t = _pair(jcls, tcls, dict(bidirectional=True))
    x = rng.standard_normal((6, IN)).astype(np.float32)
    got, _ = model.apply(params, state, jnp.asarray(x))
    for a, b in zip(_flat(got), _torch_flat(t(_t(x)))):
        assert a.shape == b.shape
        close(a, b)


def test_init_is_torchs_uniform_and_keys_include_reverse_and_projection():
    model = nn.LSTM(IN, HID, num_layers=2, bidirectional=True, proj_size=2)
    params, _ = model.init(jax.random.key(0))
    t = torch.nn.LSTM(IN, HID, num_layers=2, bidirectional=True, proj_size=2)
    assert list(params) == list(t.state_dict())
    assert "weight_hr_l1_reverse" in params and params["weight_ih_l1"].shape == (4 * HID, 2 * 2)
    bound = 1 / math.sqrt(HID)
    values = np.concatenate([np.asarray(v).ravel() for v in params.values()])
    assert values.max() <= bound and values.min() >= -bound and values.max() > 0.9 * bound


def test_dropout_between_layers_needs_a_key_in_training_only(rng):
    model = nn.GRU(IN, HID, num_layers=2, dropout=0.5)
    params, state = model.init(jax.random.key(0))
    x = jnp.asarray(rng.standard_normal((4, 2, IN)).astype(np.float32))
    with pytest.raises(ValueError, match="GRU needs a PRNG key when train=True"):
        model.apply(params, state, x, train=True)
    (a, _), _ = model.apply(params, state, x, train=True, key=jax.random.key(1))
    (b, _), _ = model.apply(params, state, x, train=True, key=jax.random.key(1))
    (e, _), _ = model.apply(params, state, x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(a, e)
    with pytest.warns(jaxnets.JaxnetsWarning, match="does nothing with num_layers=1"):
        nn.LSTM(IN, HID, dropout=0.2)


def test_jit_and_grad_through_the_scan(rng):
    model = nn.LSTM(IN, HID, num_layers=2, batch_first=True)
    params, state = model.init(jax.random.key(0))
    x = jnp.asarray(rng.standard_normal((2, 5, IN)).astype(np.float32))
    loss = jax.jit(lambda p: jnp.sum(model.apply(p, state, x)[0][0] ** 2))
    g = jax.grad(loss)(params)
    assert jax.tree.structure(g) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in g.values())


@pytest.mark.parametrize(
    "model", [nn.RNN(IN, HID, 2, "relu"), nn.LSTM(IN, HID, proj_size=2, bidirectional=True), nn.GRU(IN, HID, batch_first=True),
              nn.RNNCell(IN, HID, nonlinearity="relu"), nn.LSTMCell(IN, HID), nn.GRUCell(IN, HID, bias=False)],
    ids=repr,
)  # fmt: skip
def test_config_round_trip(model):
    rebuilt = jaxnets.from_config(json.loads(json.dumps(jaxnets.to_config(model))))
    assert rebuilt == model and hash(rebuilt) == hash(model)


def test_bad_arguments_and_inputs_raise():
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        nn.RNN(IN, HID, nonlinearity="gelu")
    with pytest.raises(ValueError, match="proj_size must be >= 0 and smaller than hidden_size"):
        nn.LSTM(IN, HID, proj_size=HID)
    model = nn.GRU(IN, HID, num_layers=2)
    params, state = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"GRU: expected input \(L, N, 3\) or \(L, 3\), got shape \(4, 2, 5\)"):
        model.apply(params, state, jnp.ones((4, 2, 5)))
    with pytest.raises(ValueError, match=r"expected hidden state h_0 \(2, 2, 5\), got \(1, 2, 5\)"):
        model.apply(params, state, jnp.ones((4, 2, IN)), jnp.ones((1, 2, HID)))


@pytest.mark.parametrize(
    "jcls, tcls, kwargs",
    [(nn.RNNCell, torch.nn.RNNCell, dict(nonlinearity="relu")), (nn.LSTMCell, torch.nn.LSTMCell, {}),
     (nn.GRUCell, torch.nn.GRUCell, {}), (nn.GRUCell, torch.nn.GRUCell, dict(bias=False))],
    ids=str,
)  # fmt: skip
def test_cells_match_torch(jcls, tcls, kwargs, close, rng):
    model, params, state, t = _pair(jcls, tcls, kwargs)
    x = rng.standard_normal((4, IN)).astype(np.float32)
    h = rng.standard_normal((4, HID)).astype(np.float32)
    hx = (h, h * 0.5) if jcls is nn.LSTMCell else h
    for args in ((x,), (x, hx), (x[0], jax.tree.map(lambda v: v[0], hx))):
        got, _ = model.apply(params, state, *jax.tree.map(jnp.asarray, args))
        want = t(*jax.tree.map(_t, args))
        for a, b in zip(_flat(got), _torch_flat(want)):
            assert a.shape == b.shape
            close(a, b)
