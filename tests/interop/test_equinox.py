"""equinox modules <-> PyTorch: a CNN with BatchNorm state, LayerNorm and an Embedding, against torch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import randomize_torch, to_torch_sd

from jaxnets import JaxnetsError, StateDictError
from jaxnets.interop import eqx_state_dict, load_eqx_state_dict

eqx = pytest.importorskip("equinox", reason="equinox is optional: pip install 'jaxnets[equinox]'")
torch = pytest.importorskip("torch")


class EqxNet(eqx.Module):
    conv: eqx.nn.Conv2d
    bn: eqx.nn.BatchNorm
    head: eqx.nn.Sequential
    ln: eqx.nn.LayerNorm

    def __init__(self, key: jax.Array) -> None:
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv = eqx.nn.Conv2d(3, 8, 3, padding=1, key=k1)
        self.bn = eqx.nn.BatchNorm(8, axis_name="batch", mode="ema", inference=True)
        self.head = eqx.nn.Sequential([eqx.nn.Linear(8 * 5 * 5, 16, key=k2), eqx.nn.Lambda(jax.nn.relu),
                                       eqx.nn.Linear(16, 10, key=k3)])
        self.ln = eqx.nn.LayerNorm(10)

    def __call__(self, x, state):  # x: (C, H, W), one example (equinox maps batches with vmap)
        x, state = self.bn(self.conv(x), state)
        return self.ln(self.head(jax.nn.relu(x).reshape(-1))), state


class TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Sequential(torch.nn.Linear(8 * 5 * 5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
        self.ln = torch.nn.LayerNorm(10)

    def forward(self, x):
        return self.ln(self.head(torch.relu(self.bn(self.conv(x))).flatten(1)))


X = np.random.default_rng(3).normal(size=(2, 3, 5, 5)).astype(np.float32)


def _make():
    return eqx.nn.make_with_state(EqxNet)(jax.random.key(0))


def _eqx_out(model, state) -> np.ndarray:
    y, _ = jax.vmap(model, in_axes=(0, None), out_axes=(0, None), axis_name="batch")(jnp.asarray(X), state)
    return np.asarray(y)


def _torch_out(tm) -> np.ndarray:
    tm.eval()
    with torch.no_grad():
        return tm(torch.from_numpy(X)).numpy()


def test_an_equinox_model_loads_strictly_into_torch_with_equal_outputs():
    model, state = _make()
    tm = TorchNet()
    randomize_torch(tm, seed=1)
    model, state = load_eqx_state_dict(model, tm.state_dict(), state)  # random stats, from torch
    sd = eqx_state_dict(model, state)
    fresh = TorchNet()
    assert list(sd) == list(fresh.state_dict())
    fresh.load_state_dict(to_torch_sd(sd), strict=True)
    np.testing.assert_allclose(_eqx_out(model, state), _torch_out(fresh), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_eqx_out(model, state), _torch_out(tm), rtol=1e-5, atol=1e-5)


def test_a_torch_state_dict_loads_into_equinox_with_its_batchnorm_state():
    model, state = _make()
    tm = TorchNet()
    randomize_torch(tm, seed=2)
    new_model, new_state = load_eqx_state_dict(model, tm.state_dict(), state)
    assert type(new_model) is EqxNet and new_model.conv.bias.shape == (8, 1, 1)
    mean, var = new_state.get(new_model.bn.ema_state_index)
    np.testing.assert_array_equal(np.asarray(var), tm.bn.running_var.numpy())
    np.testing.assert_allclose(_eqx_out(new_model, new_state), _torch_out(tm), rtol=1e-5, atol=1e-5)
    assert not np.array_equal(np.asarray(model.conv.weight), np.asarray(new_model.conv.weight))  # a copy


def test_batchnorm_without_its_state_is_an_error():
    model, _ = _make()
    with pytest.raises(JaxnetsError, match=r"bn: a BatchNorm's running statistics are in an eqx.nn.State"):
        eqx_state_dict(model)


def test_a_misshapen_or_incomplete_state_dict_gets_the_full_report():
    model, state = _make()
    sd = TorchNet().state_dict()
    del sd["ln.bias"]
    sd["head.0.weight"] = torch.zeros(16, 3)
    with pytest.raises(StateDictError, match=r"1 missing, 1 misshapen") as e:
        load_eqx_state_dict(model, sd, state)
    assert e.value.missing_keys == ["ln.bias"]


def test_an_embedding_is_already_torchs_layout():
    emb = eqx.nn.Embedding(20, 6, key=jax.random.key(0))
    t = torch.nn.Embedding(20, 6)
    t.load_state_dict(to_torch_sd(eqx_state_dict(emb)), strict=True)
    tokens = np.array([3, 0, 19])
    np.testing.assert_array_equal(np.asarray(jax.vmap(emb)(jnp.asarray(tokens))), t(torch.from_numpy(tokens)).detach().numpy())


def test_an_equinox_layer_without_a_torch_layout_is_an_error():
    attn = eqx.nn.MultiheadAttention(2, 8, key=jax.random.key(0))
    with pytest.raises(JaxnetsError, match=r"no PyTorch layout rule in jaxnets.interop: \(root\) \(MultiheadAttention\)"):
        eqx_state_dict(attn)
