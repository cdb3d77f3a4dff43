"""A load never shares writable memory with what the caller holds (issue 8, item 2).

jax arrays are immutable by contract, but on the CPU ``jnp.asarray(numpy_array)`` may alias the
numpy buffer, so an in-place change on the caller's side (``optimizer.step()``, ``zero_()``, a
train-mode forward updating BatchNorm buffers, ``arr[...] = 0``) would change loaded params.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import jaxnets
from jaxnets import nn


def _torch_cnn() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    )


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))


def _snapshot(tree) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in jaxnets.state_dict(*tree).items()}


def _assert_unchanged(tree, before: dict[str, np.ndarray]) -> None:
    after = jaxnets.state_dict(*tree)
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


def test_torch_in_place_updates_after_a_load_do_not_reach_the_params():
    tm = _torch_cnn()
    loaded = jaxnets.load_state_dict(_model(), tm.state_dict())
    before = _snapshot(loaded)
    opt = torch.optim.SGD(tm.parameters(), lr=1.0)
    tm.train()
    loss = tm(torch.randn(4, 1, 4, 4)).square().sum()  # also updates BatchNorm's running stats
    loss.backward()
    opt.step()
    with torch.no_grad():
        tm[3].bias.zero_()
    assert not torch.equal(tm[1].running_mean, torch.zeros(2))  # the source really changed
    _assert_unchanged(loaded, before)


def test_numpy_in_place_updates_after_a_load_do_not_reach_the_params():
    model = nn.Linear(4, 3)
    sd = {"weight": np.ones((3, 4), np.float32), "bias": np.arange(3, dtype=np.float32)}
    params, state = jaxnets.load_state_dict(model, sd)
    sd["weight"][...] = 7.0
    sd["bias"] += 1.0
    np.testing.assert_array_equal(params["weight"], np.ones((3, 4)))
    np.testing.assert_array_equal(params["bias"], np.arange(3.0))


def test_a_template_load_copies_numpy_values_too():
    template = {"w": jax.ShapeDtypeStruct((2, 2), np.float32)}
    src = {"w": np.zeros((2, 2), np.float32)}
    out = jaxnets.load_state_dict(template, src)
    src["w"][0, 0] = 5.0
    assert float(out["w"][0, 0]) == 0.0


def test_strict_false_fallback_values_from_a_numpy_template_are_copied():
    template = {"a": np.zeros(2, np.float32), "b": np.ones(2, np.float32)}
    with pytest.warns(jaxnets.JaxnetsWarning, match="strict=False"):
        out = jaxnets.load_state_dict(template, {"a": np.full(2, 3.0, np.float32)}, strict=False)
    template["b"][:] = 9.0
    np.testing.assert_array_equal(out["b"], np.ones(2))


def test_a_state_dict_of_abstract_values_is_a_clear_error_not_object_arrays():
    model = nn.Linear(2, 3)
    with pytest.raises(TypeError, match=r"must be an array .* got ShapeDtypeStruct"):
        jaxnets.state_dict(*jax.eval_shape(model.init, jax.random.key(0)))
