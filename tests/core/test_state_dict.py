"""state_dict / load_state_dict / check_state_dict over models and any pytree."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnets
from jaxnets import nn


@pytest.fixture
def mlp():
    model = nn.Sequential(nn.Linear(4, 8), nn.Identity(), nn.Linear(8, 2))
    params, state = model.init(jax.random.key(0))
    return model, params, state


def test_state_dict_has_pytorch_keys_shapes_and_numpy_values(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    assert {k: v.shape for k, v in sd.items()} == {
        "0.weight": (8, 4), "0.bias": (8,), "2.weight": (2, 8), "2.bias": (2,)
    }
    assert all(isinstance(v, np.ndarray) for v in sd.values())


def test_model_order_survives_jit_resorting():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(12)])
    params, state = model.init(jax.random.key(0))
    jitted = jax.jit(lambda p: p)(params)  # jax rebuilds dicts with sorted keys: "10" < "2"
    assert list(jitted)[:3] == ["0", "1", "10"]
    keys = list(model.state_dict(jitted, state))
    assert keys[:4] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert keys[-2:] == ["11.weight", "11.bias"]


def test_params_and_state_share_one_namespace_interleaved_by_module():
    params = {"0": {"weight": 1}, "1": {"weight": 2}, "2": {"weight": 3}}
    state = {"0": {}, "1": {"running_mean": 4}, "2": {}}
    assert list(jaxnets.state_dict(params, state)) == ["0.weight", "1.weight", "1.running_mean", "2.weight"]


def test_load_round_trip_is_exact(mlp):
    model, params, state = mlp
    p2, s2 = jaxnets.load_state_dict(model, jaxnets.state_dict(params, state))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p2)):
        np.testing.assert_array_equal(a, b)
    assert s2 == state


def test_strict_error_lists_every_problem_at_once(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    del sd["0.bias"], sd["2.bias"]
    sd["3.weight"] = np.zeros(3)
    sd["2.weight"] = np.zeros((2, 7), np.float32)
    with pytest.raises(jaxnets.StateDictError) as info:
        jaxnets.load_state_dict(model, sd)
    msg = str(info.value)
    for needle in ["2 missing", "1 unexpected", "1 misshapen", "0.bias", "2.bias", "3.weight",
                   "2.weight: shape (2, 7) in the state_dict, (2, 8) in the model"]:
        assert needle in msg
    assert info.value.missing_keys == ["0.bias", "2.bias"]
    assert info.value.unexpected_keys == ["3.weight"]
    assert isinstance(info.value, jaxnets.JaxnetsError)


def test_non_strict_loads_matches_warns_and_keeps_init_for_missing(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    sd["0.weight"] = np.full((8, 4), 7.0, np.float32)
    del sd["2.bias"]
    sd["extra"] = np.zeros(1)
    with pytest.warns(jaxnets.JaxnetsWarning, match=r"(?s)missing.*2\.bias.*unexpected.*extra"):
        p2, _ = jaxnets.load_state_dict(model, sd, strict=False, key=jax.random.key(0))
    np.testing.assert_array_equal(p2["0"]["weight"], 7.0)
    np.testing.assert_array_equal(p2["2"]["bias"], params["2"]["bias"])  # fresh init, key 0


def test_shape_mismatch_is_an_error_even_when_not_strict(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    sd["0.weight"] = np.zeros((4, 8), np.float32)
    with pytest.raises(jaxnets.StateDictError, match=r"0\.weight: shape \(4, 8\)"):
        jaxnets.load_state_dict(model, sd, strict=False)


def test_dtypes_are_cast_like_torch_copy_and_lossy_casts_warn(mlp):
    model, params, state = mlp
    sd = {k: v.astype(np.float64) for k, v in jaxnets.state_dict(params, state).items()}
    with pytest.warns(jaxnets.JaxnetsWarning, match=r"0\.weight: float64 -> float32"):
        p2, _ = jaxnets.load_state_dict(model, sd)
    assert p2["0"]["weight"].dtype == jnp.float32


def test_widening_int_cast_is_silent():
    template = {"num_batches_tracked": jnp.zeros((), jnp.int32)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = jaxnets.load_state_dict(template, {"num_batches_tracked": np.array(5, np.int64)})
    assert out["num_batches_tracked"].dtype == jnp.int32 and int(out["num_batches_tracked"]) == 5


def test_dtype_error_policy_refuses_any_difference(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    sd["2.bias"] = sd["2.bias"].astype(np.float16)
    with pytest.raises(jaxnets.StateDictError, match=r"2\.bias: dtype float16 in the state_dict, float32"):
        jaxnets.load_state_dict(model, sd, dtypes="error")


def test_torch_tensors_load_directly_and_bfloat16_bits_are_exact():
    torch = pytest.importorskip("torch")
    t = torch.randn(3, 4).to(torch.bfloat16)
    template = {"w": jnp.zeros((3, 4), jnp.bfloat16)}
    out = jaxnets.load_state_dict(template, {"w": t})
    np.testing.assert_array_equal(np.asarray(out["w"]).view(np.int16), t.view(torch.int16).numpy())


def test_optax_state_comes_back_as_its_namedtuples():
    params = {"w": jnp.arange(3.0)}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    st = opt.init(params)
    _, st = opt.update({"w": jnp.ones(3)}, st, params)
    flat = jaxnets.state_dict(st)
    back = jaxnets.load_state_dict(opt.init(params), flat)
    assert jax.tree.structure(back) == jax.tree.structure(st)
    np.testing.assert_array_equal(back[1][0].mu["w"], st[1][0].mu["w"])


def test_abstract_template_with_missing_entries_is_an_error():
    template = {"a": jax.ShapeDtypeStruct((2,), jnp.float32), "b": jax.ShapeDtypeStruct((), jnp.int32)}
    with pytest.raises(jaxnets.StateDictError, match="no values for them"):
        with pytest.warns(jaxnets.JaxnetsWarning):
            jaxnets.load_state_dict(template, {"a": np.zeros(2, np.float32)}, strict=False)


def test_typed_prng_keys_stay_keys():
    template = {"rng": jax.random.key(0)}
    out = jaxnets.load_state_dict(template, jaxnets.state_dict({"rng": jax.random.key(3)}))
    assert jax.dtypes.issubdtype(out["rng"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(out["rng"]), jax.random.key_data(jax.random.key(3)))


def test_check_state_dict_reports_without_loading(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    sd.pop("2.weight")
    report = jaxnets.check_state_dict(model, sd)
    assert report.missing == ("2.weight",) and not report.unexpected and not report.clean


def test_nested_tree_is_accepted_as_a_state_dict(mlp):
    model, params, state = mlp
    p2, _ = jaxnets.load_state_dict(model, params)
    np.testing.assert_array_equal(p2["2"]["weight"], params["2"]["weight"])


def test_a_non_mapping_source_is_a_clear_error(mlp):
    model, *_ = mlp
    with pytest.raises(TypeError, match="must be a mapping"):
        jaxnets.load_state_dict(model, [1, 2])


def test_report_lists_a_models_keys_in_pytorch_order_not_jax_sorted_order():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])
    with pytest.raises(jaxnets.StateDictError) as info:
        jaxnets.load_state_dict(model, {})
    assert info.value.missing_keys[:3] == ["0.weight", "0.bias", "1.weight"]
    assert info.value.missing_keys[-2:] == ["10.weight", "10.bias"]
