"""The one placer: device / sharding / tree / function / template, and the errors for bad ones."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.core.placement import placer, resolve_device
from jaxnets.core.structure import LeafInfo

CPU = jax.local_devices(backend="cpu")[0]
ONE = jax.sharding.SingleDeviceSharding(CPU)
INFO = LeafInfo((2, 3), "float32")


def test_device_names_resolve_to_this_process_devices():
    assert resolve_device("cpu") == CPU
    assert resolve_device(CPU) is CPU
    assert resolve_device(None) == jax.local_devices()[0]
    place = placer(device="cpu")
    assert place.sharding("a.b", INFO) == ONE


@pytest.mark.parametrize("bad", ["tpu", "nonsense"])
def test_an_unknown_device_says_which_this_process_has(bad):
    with pytest.raises(ValueError, match=rf"device='{bad}': this process has no such device.*it has cpu"):
        placer(device=bad)


@pytest.mark.parametrize("bad", [0, ["cpu"], 1.5])
def test_a_device_of_another_type_is_a_type_error(bad):
    with pytest.raises(TypeError, match="device= takes a platform name .* or a jax.Device"):
        placer(device=bad)


def test_device_and_sharding_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        placer(device="cpu", sharding=ONE)


def test_one_sharding_places_every_leaf():
    place = placer(sharding=ONE)
    assert place.sharding("x", INFO) is ONE and place.sharding("y.z", LeafInfo((), "int32")) is ONE


def test_a_tree_of_shardings_places_by_key_and_leaves_the_rest_to_the_default():
    place = placer(sharding={"params": {"fc": {"weight": ONE}}}, keys=["params.fc.weight", "params.fc.bias"])
    assert place.sharding("params.fc.weight", INFO) is ONE
    assert place.sharding("params.fc.bias", INFO) is None
    assert place.sharding_or_default("params.fc.bias", INFO) == place.default


def test_a_tree_naming_unknown_keys_or_holding_non_shardings_is_refused():
    with pytest.raises(ValueError, match="not loaded here: params.head.weight"):
        placer(sharding={"params": {"head": {"weight": ONE}}}, keys=["params.fc.weight"])
    with pytest.raises(TypeError, match="'params.fc.weight' is a str, not a jax.sharding.Sharding"):
        placer(sharding={"params": {"fc": {"weight": "cpu"}}})


def test_a_function_gets_each_key_and_info_and_may_defer_to_the_template():
    seen = {}

    def fn(key, info):
        seen[key] = info
        return ONE if key.endswith("weight") else None

    like = {"b": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=ONE), "c": np.zeros(3)}
    place = placer(sharding=fn, like=like)
    assert place.sharding("a.weight", INFO) is ONE and seen["a.weight"] == INFO
    assert place.sharding("b", LeafInfo((3,), "float32")) is ONE  # from the template
    assert place.sharding("c", LeafInfo((3,), "float64")) is None  # numpy: no sharding


def test_a_function_returning_something_else_names_the_key():
    place = placer(sharding=lambda key, info: "cpu")
    with pytest.raises(TypeError, match="params.w: the sharding function returned a str"):
        place.sharding("params.w", INFO)


@pytest.mark.parametrize("bad", [3, "cpu", [ONE]])
def test_a_sharding_of_another_type_says_what_is_accepted(bad):
    with pytest.raises(TypeError, match="sharding= takes a jax.sharding.Sharding, a tree of them, or fn"):
        placer(sharding=bad)


def test_put_keeps_key_order_and_values_and_commits_only_what_was_placed():
    flat = {"z": np.arange(3.0, dtype=np.float32), "a": np.ones((2, 2), np.int32), "m": jnp.zeros(4)}
    out = placer(sharding={"a": ONE}).put(flat)
    assert list(out) == ["z", "a", "m"]  # not sorted: the caller's (PyTorch's) order
    for k in flat:
        assert isinstance(out[k], jax.Array)
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(flat[k]))
    assert out["a"].committed and out["a"].sharding == ONE
    assert not out["z"].committed  # jax's default device, as jnp.asarray leaves it


def test_put_places_by_the_given_info_when_the_data_is_stored_differently():
    seen = {}
    place = placer(sharding=lambda key, info: seen.setdefault(key, info) and ONE)
    key_data = np.zeros((5, 2), np.uint32)  # a stored PRNG key array
    out = place.put({"rng": key_data}, infos={"rng": LeafInfo((5,), "key<fry>")})
    assert seen["rng"] == LeafInfo((5,), "key<fry>") and out["rng"].sharding == ONE
