"""core/structure.py: the one checker (compare), LeafInfo, the report's text and its hints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxnets.core.structure import (
    LeafInfo,
    Mismatch,
    StructureReport,
    compare,
    dtype_name,
    format_shape,
    hints,
    jax_dtype,
    leaf_info,
)

torch = pytest.importorskip("torch")


# --- LeafInfo and names ---------------------------------------------------------------------------
def test_leaf_info_of_numpy_jax_abstract_and_scalars() -> None:
    assert leaf_info(np.zeros((2, 3), np.float16)) == LeafInfo((2, 3), "float16")
    assert leaf_info(jnp.ones(4, jnp.int8)) == LeafInfo((4,), "int8")
    assert leaf_info(jax.ShapeDtypeStruct((5, 1), jnp.float32)) == LeafInfo((5, 1), "float32")
    assert leaf_info(3.5) == LeafInfo((), "float64")
    assert leaf_info(True) == LeafInfo((), "bool")


def test_leaf_info_of_torch_tensors_uses_numpy_names() -> None:
    assert leaf_info(torch.zeros(2, 3)) == LeafInfo((2, 3), "float32")
    assert leaf_info(torch.zeros(3, dtype=torch.bfloat16)) == LeafInfo((3,), "bfloat16")
    assert leaf_info(torch.tensor(7)) == LeafInfo((), "int64")
    assert leaf_info(torch.zeros(2).to(torch.float8_e4m3fn)) == LeafInfo((2,), "float8_e4m3fn")
    # torch packs two float4 values per element; the info describes the values, as numpy holds them
    packed = torch.zeros(3, 2, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    assert leaf_info(packed) == LeafInfo((3, 4), "float4_e2m1fn")


def test_leaf_info_of_bfloat16_and_prng_keys() -> None:
    assert leaf_info(np.zeros(2, ml_dtypes.bfloat16)) == LeafInfo((2,), "bfloat16")
    assert leaf_info(jnp.zeros((), jnp.bfloat16)) == LeafInfo((), "bfloat16")
    assert leaf_info(jax.random.key(0)) == LeafInfo((), "key<fry>")
    assert leaf_info(jax.random.split(jax.random.key(0), 3)) == LeafInfo((3,), "key<fry>")
    assert leaf_info(jax.random.key(0, impl="rbg")).dtype == "key<rbg>"


def test_dtype_name_accepts_numpy_ml_dtypes_torch_and_names() -> None:
    assert dtype_name(np.float32) == dtype_name(np.dtype("float32")) == dtype_name("float32") == "float32"
    assert dtype_name(ml_dtypes.int4) == "int4"
    assert dtype_name(torch.float8_e5m2) == "float8_e5m2"
    assert dtype_name(jax.random.key(0).dtype) == dtype_name("key<fry>") == "key<fry>"


def test_jax_dtype_inverts_dtype_name() -> None:
    for name in ("float32", "bfloat16", "float8_e4m3fn", "int4", "key<fry>", "key<rbg>"):
        assert dtype_name(jax_dtype(name)) == name
    with pytest.raises(TypeError):
        jax_dtype("key<nope>")


@pytest.mark.parametrize("shape, text", [((), "()"), ((3,), "(3,)"), ((8, 4), "(8, 4)"), ([2, 1, 0], "(2, 1, 0)")])
def test_format_shape_writes_python_tuples(shape, text) -> None:
    assert format_shape(shape) == text == str(tuple(shape))


# --- compare --------------------------------------------------------------------------------------
def test_compare_finds_every_category_at_once() -> None:
    expected = {
        "a": LeafInfo((2,), "float32"),
        "b": LeafInfo((3, 4), "float32"),
        "c": LeafInfo((), "int32"),
        "d": LeafInfo((1,), "float32"),
    }
    got = {
        "b": LeafInfo((4, 3), "float32"),
        "c": LeafInfo((), "int64"),
        "d": LeafInfo((1,), "float32"),
        "z": LeafInfo((9,), "float32"),
    }
    r = compare(expected, got)
    assert r.missing == ("a",)
    assert r.unexpected == ("z",)
    assert r.shape_mismatch == (Mismatch("b", (3, 4), (4, 3)),)
    assert r.dtype_mismatch == (Mismatch("c", "int32", "int64"),)
    assert not r.keys_match and not r.clean
    assert r.problem_paths() == ["a", "z", "b", "c"]


def test_compare_takes_arrays_as_well_as_infos() -> None:
    r = compare({"w": np.zeros((2, 2), np.float32)}, {"w": jnp.zeros((2, 2), jnp.bfloat16)})
    assert r.dtype_mismatch == (Mismatch("w", "float32", "bfloat16"),)


def test_a_shape_difference_hides_the_dtype_difference_of_the_same_entry() -> None:
    r = compare({"w": LeafInfo((2,), "float32")}, {"w": LeafInfo((3,), "int8")})
    assert len(r.shape_mismatch) == 1 and r.dtype_mismatch == ()


def test_compare_lists_in_expected_order_then_got_order() -> None:
    expected = {k: LeafInfo((), "float32") for k in ["10.w", "2.w", "1.w", "3.w"]}
    got = {k: LeafInfo((), "float32") for k in ["x9", "3.w", "x1"]}
    r = compare(expected, got)
    assert r.missing == ("10.w", "2.w", "1.w")
    assert r.unexpected == ("x9", "x1")


def test_identical_structures_are_clean() -> None:
    infos = {"a": LeafInfo((2,), "float32"), "k": LeafInfo((), "key<fry>")}
    r = compare(infos, dict(infos))
    assert r.clean and r.keys_match and r.problem_paths() == []


# --- text -----------------------------------------------------------------------------------------
def _report() -> StructureReport:
    return StructureReport(
        missing=("fc.bias",),
        unexpected=("head.weight",),
        shape_mismatch=(Mismatch("fc.weight", (8, 4), (8, 3)),),
        dtype_mismatch=(Mismatch("bn.running_mean", "float32", "float64"),),
    )


def test_format_lists_every_problem_with_both_sides() -> None:
    text = _report().format(expected="the model", got="w.safetensors")
    assert text.splitlines() == [
        "w.safetensors does not fit the model: 1 missing, 1 unexpected, 1 misshapen, 1 mistyped",
        "  missing (in the model, not in w.safetensors):",
        "    fc.bias",
        "  unexpected (in w.safetensors, not in the model):",
        "    head.weight",
        "  misshapen:",
        "    fc.weight: shape (8, 3) in w.safetensors, (8, 4) in the model",
        "  mistyped:",
        "    bn.running_mean: dtype float64 in w.safetensors, float32 in the model",
    ]


def test_format_can_leave_out_dtypes_and_add_a_last_line() -> None:
    text = _report().format(dtypes=False, hint="do this")
    assert "mistyped" not in text and "1 mistyped" not in text
    assert text.endswith("\ndo this")


def test_str_is_the_formatted_report_and_a_clean_report_says_so() -> None:
    assert str(_report()) == _report().format()
    assert str(StructureReport()) == "the state_dict fits the model: every key, shape and dtype agrees"


def test_hints_are_printed_after_the_problems() -> None:
    r = StructureReport(missing=("w",), unexpected=("module.w",), hints=("pass strip_prefix='module.'.",))
    assert str(r).splitlines()[-1] == "  hint: pass strip_prefix='module.'."


# --- hints ----------------------------------------------------------------------------------------
def _hints(expected: list[str], got: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]] | None = None):
    e = {k: LeafInfo((shapes or {}).get(k, (1,)), "float32") for k in expected}
    g = {k: LeafInfo(s, "float32") for k, s in got.items()}
    return hints(compare(e, g), e)


def test_hint_strip_prefix_when_every_unexpected_key_is_a_model_key_under_a_prefix() -> None:
    (h,) = _hints(["fc.weight", "fc.bias"], {"module.fc.weight": (1,), "module.fc.bias": (1,)})
    assert "strip_prefix='module.'" in h


def test_hint_strip_prefix_names_the_extra_keys_of_a_checkpoint_with_a_head() -> None:
    (h,) = _hints(["enc.w", "enc.b"], {"bert.enc.w": (1,), "bert.enc.b": (1,), "cls.w": (1,)})
    assert "strip_prefix='bert.'" in h and "'cls.w'" in h and "rename=" in h


def test_no_strip_hint_when_the_model_has_keys_under_that_prefix() -> None:
    assert _hints(["model.x", "y"], {"model.y": (1,)}) == ()


def test_hint_prefix_when_the_state_dict_is_a_sub_models() -> None:
    (h,) = _hints(["backbone.fc.weight", "backbone.fc.bias", "head.weight"], {"fc.weight": (1,), "fc.bias": (1,)})
    assert "prefix='backbone.'" in h and "strip_prefix" not in h


def test_hint_transposed_weights_by_key_with_a_transform_that_covers_them() -> None:
    (h,) = _hints(
        ["h.0.attn.c_attn.weight", "h.0.mlp.c_fc.weight"],
        {"h.0.attn.c_attn.weight": (4, 12), "h.0.mlp.c_fc.weight": (4, 16)},
        shapes={"h.0.attn.c_attn.weight": (12, 4), "h.0.mlp.c_fc.weight": (16, 4)},
    )
    assert "'h.0.attn.c_attn.weight'" in h and "'h.0.mlp.c_fc.weight'" in h and "transposed" in h
    assert "Square weights" in h  # the case no check can see
    pattern = h.split("transform={r'")[1].split("'")[0]
    import re

    assert re.fullmatch(pattern, "h.0.attn.c_attn.weight") and re.fullmatch(pattern, "h.7.mlp.c_fc.weight")
    assert not re.fullmatch(pattern, "h.0.attn.c_proj.weight")


def test_no_hints_for_unrelated_differences() -> None:
    assert _hints(["a", "b"], {"c": (1,)}, shapes={"a": (2, 3)}) == ()
    assert _hints(["a"], {"a": (5, 5)}, shapes={"a": (4, 4)}) == ()
