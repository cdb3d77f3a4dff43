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


# --- load hooks: key mapping ----------------------------------------------------------------------
def test_strip_prefix_loads_a_dataparallel_state_dict():
    torch = pytest.importorskip("torch")
    tm = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    sd = torch.nn.DataParallel(tm).state_dict()  # keys "module.0.weight", ...
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(jaxnets.StateDictError, match=r"hint: every unexpected key .* strip_prefix='module\.'"):
        jaxnets.load_state_dict(model, sd)
    params, state = jaxnets.load_state_dict(model, sd, strip_prefix="module.")
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    y, _ = model.apply(params, state, jnp.asarray(x))
    np.testing.assert_allclose(y, tm(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_prefix_loads_a_sub_models_state_dict(mlp):
    model, params, state = mlp
    wrapped = nn.Sequential(model, nn.Linear(2, 2))
    sub = jaxnets.state_dict(params, state)
    report = jaxnets.check_state_dict(wrapped, sub)
    assert any("prefix='0.'" in h for h in report.hints)
    with pytest.warns(jaxnets.JaxnetsWarning, match=r"(?s)missing.*1\.weight"):
        p2, _ = jaxnets.load_state_dict(wrapped, sub, prefix="0.", strict=False)
    np.testing.assert_array_equal(p2["0"]["2"]["weight"], params["2"]["weight"])


def test_rename_rules_apply_in_order_and_none_drops_keys(mlp):
    model, params, state = mlp
    sd = {f"encoder.layers.{k}": v for k, v in jaxnets.state_dict(params, state).items()}
    sd["encoder.pooler.dense"] = np.zeros(3)
    rules = [(r"^encoder\.", ""), (r"^pooler\.", None), (r"^layers\.", "")]
    p2, _ = jaxnets.load_state_dict(model, sd, rename=rules)
    np.testing.assert_array_equal(p2["0"]["weight"], params["0"]["weight"])
    report = jaxnets.check_state_dict(model, sd, rename=rules)
    assert report.clean


def test_rename_function_maps_and_drops(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    sd["num_steps"] = np.array(3)
    renamed = {k.replace("weight", "w"): v for k, v in sd.items()}
    p2, _ = jaxnets.load_state_dict(
        model, renamed, rename=lambda k: None if k == "num_steps" else k.replace(".w", ".weight")
    )
    np.testing.assert_array_equal(p2["2"]["weight"], params["2"]["weight"])


def test_rename_that_maps_two_keys_to_one_is_an_error(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    with pytest.raises(ValueError, match=r"'0\.weight' and '0\.bias' both map to '0\.x'"):
        jaxnets.load_state_dict(model, sd, rename=[(r"(weight|bias)$", "x")])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rename": "fc"}, "rename must be"),
        ({"rename": [("a",)]}, "rename rule"),
        ({"transform": [1]}, "transform must be"),
        ({"strip_prefix": 3}, "strip_prefix must be a str"),
    ],
)
def test_bad_hook_arguments_are_type_errors(mlp, kwargs, match):
    model, params, state = mlp
    with pytest.raises(TypeError, match=match):
        jaxnets.load_state_dict(model, jaxnets.state_dict(params, state), **kwargs)


# --- load hooks: transforms -----------------------------------------------------------------------
def _conv1d_pair(n_in, n_out):
    """transformers' Conv1D (GPT-2's layer, weight (in, out)) and the nn.Linear it is."""
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    return Conv1D(n_out, n_in), nn.Linear(n_in, n_out), torch


@pytest.mark.parametrize("n_in, n_out", [(4, 6), (5, 5)])
def test_transform_transposes_hugging_face_conv1d_weights(n_in, n_out):
    conv, linear, torch = _conv1d_pair(n_in, n_out)
    params, _ = jaxnets.load_state_dict(linear, conv.state_dict(), transform={"weight": lambda w: w.T})
    x = np.random.default_rng(1).normal(size=(2, n_in)).astype(np.float32)
    y, _ = linear.apply(params, {}, jnp.asarray(x))
    np.testing.assert_allclose(y, conv(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_a_transposed_non_square_weight_is_named_with_the_transform_to_use():
    conv, linear, _ = _conv1d_pair(4, 6)
    with pytest.raises(jaxnets.StateDictError, match=r"(?s)weight: shape \(4, 6\).*'weight' is stored transposed"):
        jaxnets.load_state_dict(linear, conv.state_dict())


def test_a_transposed_square_weight_loads_silently_wrong_without_the_transform():
    # The documented trap (docs/saving_loading.md): no check can see it; the output differs.
    conv, linear, torch = _conv1d_pair(5, 5)
    params, _ = jaxnets.load_state_dict(linear, conv.state_dict())
    x = np.random.default_rng(1).normal(size=(2, 5)).astype(np.float32)
    y, _ = linear.apply(params, {}, jnp.asarray(x))
    assert not np.allclose(y, conv(torch.from_numpy(x)).detach().numpy(), atol=1e-3)


def test_transform_output_shape_is_checked_before_any_data_is_read(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    sd["0.weight"] = sd["0.weight"].reshape(-1)  # stored flat: (32,)
    seen = []

    def unflatten(w):
        seen.append(type(w).__name__)
        return w.reshape(8, 4)

    report = jaxnets.check_state_dict(model, sd, transform={r"0\.weight": unflatten})
    assert report.clean and all("Tracer" in t for t in seen)  # traced only, never given data
    p2, _ = jaxnets.load_state_dict(model, sd, transform={r"0\.weight": unflatten})
    np.testing.assert_array_equal(p2["0"]["weight"], params["0"]["weight"])
    with pytest.raises(jaxnets.StateDictError, match=r"0\.weight: shape \(4, 8\)"):
        jaxnets.load_state_dict(model, sd, transform={r"0\.weight": lambda w: w.reshape(4, 8)})


def test_transform_function_of_key_and_array_with_a_dtype_change(mlp):
    model, params, state = mlp
    sd = {k: v.astype(np.float16) for k, v in jaxnets.state_dict(params, state).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float16 -> float32 by the transform: nothing lossy to say
        p2, _ = jaxnets.load_state_dict(model, sd, dtypes="error", transform=lambda k, w: w.astype(jnp.float32))
    assert p2["0"]["weight"].dtype == jnp.float32
    np.testing.assert_array_equal(p2["0"]["weight"], sd["0.weight"].astype(np.float32))


def test_transform_patterns_that_match_nothing_or_overlap_are_errors(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    with pytest.raises(ValueError, match=r"match no key.*c_attn"):
        jaxnets.load_state_dict(model, sd, transform={r".*\.c_attn\.weight": lambda w: w.T})
    with pytest.raises(ValueError, match="several transform patterns"):
        jaxnets.load_state_dict(model, sd, transform={r"0\..*": lambda w: w, r".*\.weight": lambda w: w})


def test_a_transform_that_needs_concrete_data_is_explained(mlp):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    with pytest.raises(ValueError, match=r"transform of '0\.weight' cannot run on an abstract array.*jax\.numpy"):
        jaxnets.load_state_dict(model, sd, transform={r"0\.weight": lambda w: np.ascontiguousarray(np.asarray(w).T).T})


# --- integer casts --------------------------------------------------------------------------------
def test_torch_batchnorm_int64_counter_is_not_mistyped_and_loads_with_dtypes_error():
    torch = pytest.importorskip("torch")
    tbn = torch.nn.BatchNorm1d(3)
    tbn.train()
    for _ in range(5):
        tbn(torch.randn(4, 3))
    bn = nn.BatchNorm1d(3)
    report = jaxnets.check_state_dict(bn, tbn.state_dict())
    assert report.clean, str(report)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, state = jaxnets.load_state_dict(bn, tbn.state_dict(), dtypes="error")
    assert state["num_batches_tracked"].dtype == jnp.int32 and int(state["num_batches_tracked"]) == 5


def test_an_integer_that_does_not_fit_is_an_error_naming_the_key_never_wrapped():
    torch = pytest.importorskip("torch")
    tbn = torch.nn.BatchNorm1d(3)
    sd = tbn.state_dict()
    sd["num_batches_tracked"] = torch.tensor(2**31 + 5)
    bn = nn.BatchNorm1d(3)
    report = jaxnets.check_state_dict(bn, sd)
    assert [m.path for m in report.dtype_mismatch] == ["num_batches_tracked"]
    for dtypes in ("cast", "error"):
        with pytest.raises(jaxnets.StateDictError, match=r"num_batches_tracked: int64 value 2147483653 does not fit int32") as info:
            jaxnets.load_state_dict(bn, sd, dtypes=dtypes)
        assert info.value.path == "num_batches_tracked"


@pytest.mark.parametrize(
    "value, dtype, match",
    [
        (np.array([-1, 3], np.int64), jnp.uint8, r"values from -1 to 3 do not fit uint8"),
        (np.array([3e9], np.float32), jnp.int32, r"value 3000000000 does not fit int32"),
        (np.array([np.nan], np.float32), jnp.int32, r"NaN or infinite"),
    ],
)
def test_casts_into_integers_that_would_wrap_are_errors(value, dtype, match):
    template = {"n": jnp.zeros(value.shape, dtype)}
    with pytest.raises(jaxnets.StateDictError, match=match):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jaxnets.JaxnetsWarning)  # float -> int is also lossy
            jaxnets.load_state_dict(template, {"n": value})


def test_float_to_int_in_range_truncates_like_torch_and_warns():
    template = {"n": jnp.zeros(3, jnp.int32)}
    with pytest.warns(jaxnets.JaxnetsWarning, match=r"n: float32 -> int32"):
        out = jaxnets.load_state_dict(template, {"n": np.array([1.7, -2.5, 3.0], np.float32)})
    torch = pytest.importorskip("torch")
    want = torch.zeros(3, dtype=torch.int32).copy_(torch.tensor([1.7, -2.5, 3.0]))
    np.testing.assert_array_equal(out["n"], want.numpy())


def test_narrowing_to_bfloat16_warns_as_lossy(mlp):
    template = {"w": jnp.zeros(2, jnp.bfloat16)}
    with pytest.warns(jaxnets.JaxnetsWarning, match=r"w: float32 -> bfloat16"):
        jaxnets.load_state_dict(template, {"w": np.ones(2, np.float32)})


# --- reports and in-memory torch tensors ----------------------------------------------------------
def test_print_check_state_dict_shows_the_formatted_report(mlp, capsys):
    model, params, state = mlp
    sd = jaxnets.state_dict(params, state)
    del sd["0.bias"]
    print(jaxnets.check_state_dict(model, sd))
    out = capsys.readouterr().out
    assert out.startswith("the state_dict does not fit the model: 1 missing\n  missing (in the model, not in the state_dict):\n    0.bias")


def test_torch_float8_tensors_load_exactly():
    torch = pytest.importorskip("torch")
    t = torch.tensor([0.5, -1.75, 448.0, -0.0]).to(torch.float8_e4m3fn)
    out = jaxnets.load_state_dict({"w": jnp.zeros(4, jnp.float8_e4m3fn)}, {"w": t})
    np.testing.assert_array_equal(np.asarray(out["w"]).view(np.uint8), t.view(torch.uint8).numpy())


@pytest.mark.parametrize("kind", ["sparse", "quantized", "nested"])
def test_in_memory_torch_tensors_that_are_not_dense_are_refused_by_key(kind):
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own notes on its prototype features
        t = {
            "sparse": lambda: torch.eye(3).to_sparse(),
            "quantized": lambda: torch.quantize_per_tensor(torch.zeros(3), 0.1, 0, torch.qint8),
            "nested": lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]),
        }[kind]()
    with pytest.raises(jaxnets.JaxnetsError, match=rf"w: a {kind} tensor") as info:
        jaxnets.load_state_dict({"w": jnp.zeros(3)}, {"w": t})
    assert info.value.path == "w"


def test_the_documented_gpt2_pattern_covers_every_conv1d_weight_and_nothing_else():
    """docs/saving_loading.md's transform for GPT-2, against transformers' own GPT2Model."""
    import re
    from pathlib import Path

    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    docs = (Path(__file__).parents[2] / "docs" / "saving_loading.md").read_text()
    pattern = re.search(r'transform=\{r"([^"]+)": lambda w: w\.T\}', docs).group(1)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=8, n_head=2, n_positions=16, vocab_size=11)
    gpt2 = transformers.GPT2Model(cfg)
    conv = {f"{name}.weight" for name, m in gpt2.named_modules() if isinstance(m, Conv1D)}
    assert len(conv) == 8
    assert {k for k in gpt2.state_dict() if re.fullmatch(pattern, k)} == conv
    square = [k for k in conv if gpt2.state_dict()[k].shape[0] == gpt2.state_dict()[k].shape[1]]
    assert sorted(square) == sorted(k for k in conv if "attn.c_proj" in k)  # the ones no check sees
