"""nnx State and equinox modules through jaxnets' own state_dict, files and checkpoints, as themselves.

These are the libraries' native trees (flax's ``kernel`` layout, equinox's attribute paths), not
PyTorch layouts: for those see test_flax_nnx.py and test_equinox.py.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets import StateDictError

nnx = pytest.importorskip("flax.nnx", reason="flax is optional: pip install 'jaxnets[flax]'")
eqx = pytest.importorskip("equinox", reason="equinox is optional: pip install 'jaxnets[equinox]'")


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.fc = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.fc(x))


X = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)


def _eqx_model(seed: int):
    return eqx.nn.Sequential(
        [
            eqx.nn.Linear(3, 4, key=jax.random.key(seed)),
            eqx.nn.Lambda(jax.nn.tanh),
            eqx.nn.Linear(4, 2, key=jax.random.key(seed + 1)),
        ]
    )


def test_an_nnx_state_loads_back_as_an_nnx_state_with_every_key_checked():
    src, dst = Net(nnx.Rngs(0)), Net(nnx.Rngs(1))
    sd = jaxnets.state_dict(nnx.state(src))
    assert "fc.kernel.value" in sd and "bn.mean.value" in sd  # nnx's own paths (Variable.value)
    loaded = jaxnets.load_state_dict(nnx.state(dst), sd)
    assert isinstance(loaded, nnx.State)
    nnx.update(dst, loaded)
    np.testing.assert_array_equal(np.asarray(dst(X)), np.asarray(src(X)))
    del sd["bn.mean.value"]
    with pytest.raises(StateDictError, match=r"(?s)1 missing.*bn.mean.value"):
        jaxnets.load_state_dict(nnx.state(dst), sd)


def test_an_equinox_module_loads_back_as_itself_through_its_array_filter():
    src, dst = _eqx_model(0), _eqx_model(5)
    sd = jaxnets.state_dict(eqx.filter(src, eqx.is_array))
    assert list(sd) == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    loaded = eqx.combine(jaxnets.load_state_dict(eqx.filter(dst, eqx.is_array), sd), dst)
    assert type(loaded) is type(dst)
    x = X[0]
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(src(x)))
    sd["layers.2.weight"] = np.zeros((3, 4), np.float32)
    with pytest.raises(
        StateDictError, match=r"layers.2.weight: shape \(3, 4\) in the state_dict, \(2, 4\)"
    ):
        jaxnets.load_state_dict(eqx.filter(dst, eqx.is_array), sd)


def test_an_nnx_state_saved_to_a_file_loads_into_a_template(tmp_path: Path):
    src, dst = Net(nnx.Rngs(0)), Net(nnx.Rngs(1))
    jaxnets.save_state_dict(tmp_path / "net.jnet", nnx.state(src), fsync=False)
    loaded = jaxnets.load_state_dict(nnx.state(dst), tmp_path / "net.jnet")
    assert isinstance(loaded, nnx.State)
    nnx.update(dst, loaded)
    np.testing.assert_array_equal(np.asarray(dst(X)), np.asarray(src(X)))


def test_an_equinox_module_saved_to_a_file_loads_into_a_template(tmp_path: Path):
    src, dst = _eqx_model(0), _eqx_model(5)
    jaxnets.save_state_dict(tmp_path / "m.jnet", eqx.filter(src, eqx.is_array), fsync=False)
    loaded = eqx.combine(
        jaxnets.load_state_dict(eqx.filter(dst, eqx.is_array), tmp_path / "m.jnet"), dst
    )
    np.testing.assert_array_equal(np.asarray(loaded(X[0])), np.asarray(src(X[0])))


def test_a_checkpoint_of_an_nnx_state_and_an_equinox_module_restores_them_as_themselves(
    tmp_path: Path,
):
    net, em = Net(nnx.Rngs(0)), _eqx_model(0)
    with jaxnets.CheckpointManager(tmp_path / "ckpt") as mgr:
        mgr.save(1, params={"nnx": nnx.state(net), "eqx": eqx.filter(em, eqx.is_array)})
    like = {
        "params": {
            "nnx": nnx.state(Net(nnx.Rngs(1))),
            "eqx": eqx.filter(_eqx_model(5), eqx.is_array),
        }
    }
    with jaxnets.CheckpointManager(tmp_path / "ckpt") as mgr:
        got = mgr.restore(1, like=like).params
    assert isinstance(got["nnx"], nnx.State)
    np.testing.assert_array_equal(
        np.asarray(eqx.combine(got["eqx"], em)(X[0])), np.asarray(em(X[0]))
    )


def test_without_a_template_an_nnx_state_is_a_clear_error_saying_to_pass_one(tmp_path: Path):
    net = Net(nnx.Rngs(0))
    jaxnets.save_state_dict(tmp_path / "net.jnet", nnx.state(net), fsync=False)
    with pytest.raises(
        jaxnets.RegistryError,
        match=r"saved from a flax.nnx.*State.*load_state_dict\(template, path\)",
    ):
        jaxnets.load(tmp_path / "net.jnet")
    with jaxnets.CheckpointManager(tmp_path / "ckpt", async_save=False) as mgr:
        mgr.save(1, params=nnx.state(net))
        with pytest.raises(jaxnets.RegistryError, match=r"at 'params'.*restore\(like="):
            mgr.restore(1)
        assert isinstance(
            mgr.restore(1, like={"params": nnx.state(Net(nnx.Rngs(3)))}).params, nnx.State
        )
