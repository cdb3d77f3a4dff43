"""The layout of a step, unit by unit: plan, snapshot, finish (pack + checksums), unpack."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets.checkpoint import _layout
from jaxnets.checkpoint._integrity import array_checksum, check_arrays, verify_checksums
from jaxnets.checkpoint.meta import GROUP_PREFIX, array_specs, check_meta
from jaxnets.core.placement import placer


def _record():
    return {
        "params": {
            "w": jnp.arange(6.0).reshape(2, 3),
            "b": jnp.ones(3),
            "n": jnp.arange(4, dtype=jnp.int32),
            "big": jnp.arange(100.0),  # 400 bytes
        },
        "state": {"np": np.arange(3, dtype=np.int16), "s": np.float32(2.5), "step": 7, "x": float("nan")},
        "opt_state": None,
        "rng": jax.random.key(3),
    }


def test_a_plan_packs_small_leaves_by_dtype_in_key_order_with_tiling_offsets():
    plan = _layout.make_plan(_record(), group_below=256)
    leaves = plan.meta["leaves"]
    packed = [k for k, e in leaves.items() if e.get("group") == "float32"]
    assert packed == ["params.w", "params.b", "state.s"]
    assert [leaves[k]["offset"] for k in packed] == [0, 6, 9]
    assert plan.meta["groups"] == {"float32": 10, "int32": 4, "int16": 3, "uint32": 2}
    assert leaves["rng"] == {"kind": "key", "shape": [], "dtype": "key<fry>", "impl": "threefry2x32", "group": "uint32", "offset": 0}
    assert "group" not in leaves["params.big"]  # 400 bytes >= 256: stored alone
    assert leaves["state.step"] == {"kind": "py", "shape": [], "dtype": "int64", "value": 7}
    assert leaves["state.x"]["value"] == "nan" and leaves["state.x"]["float"] is True
    assert leaves["state.s"]["kind"] == "npscalar"
    assert not _layout.make_plan(_record(), group_below=0).grouped  # packing off


def test_a_leaf_that_cannot_be_stored_is_a_type_error_naming_its_key():
    with pytest.raises(TypeError, match="params.f: cannot checkpoint a builtins.function"):
        _layout.make_plan({"params": {"f": lambda: 0}}, group_below=256)


def test_the_plan_is_reused_only_while_the_structure_shapes_and_dtypes_are_the_same():
    snap, plan = _layout.snapshot(_record(), group_below=256)
    _, again = _layout.snapshot(_record(), group_below=256, plan=plan)
    assert again is plan
    changed = _record()
    changed["params"]["b"] = jnp.ones(4)
    _, other = _layout.snapshot(changed, group_below=256, plan=plan)
    assert other is not plan and other.meta["groups"]["float32"] == 11


def test_a_snapshot_is_out_of_the_callers_reach():
    record = _record()
    snap, plan = _layout.snapshot(record, group_below=256)
    data = dict(zip(plan.keys, snap.data))
    record["state"]["np"][:] = 99  # the caller changes its numpy leaf in place
    np.testing.assert_array_equal(data["state.np"], [0, 1, 2])
    view = data["params.w"]  # jax leaf: a read-only view of its (immutable, pinned) buffer
    assert isinstance(view, memoryview) and view.readonly
    np.testing.assert_array_equal(np.asarray(view), record["params"]["w"])
    np.testing.assert_array_equal(data["rng"], jax.random.key_data(record["rng"]))


def test_a_deleted_array_is_a_value_error_naming_its_key():
    record = _record()
    _, plan = _layout.snapshot(record, group_below=256)
    record["params"]["b"].delete()
    with pytest.raises(ValueError, match="params.b: this array was deleted"):
        _layout.snapshot(record, group_below=256, plan=plan)


def test_finish_packs_aligned_buffers_and_checksums_every_stored_array():
    snap, _ = _layout.snapshot(_record(), group_below=256)
    arrays, meta = _layout.finish(snap, {"step": 0, "model": None, "optimizer": None, "metrics": None, "extra": None})
    group = arrays[GROUP_PREFIX + "float32"]
    np.testing.assert_array_equal(group, [0, 1, 2, 3, 4, 5, 1, 1, 1, 2.5])
    assert group.ctypes.data % 64 == 0  # jax can hold it without a copy
    assert meta["groups"]["float32"] == {"length": 10, "xxh3": array_checksum(group)}
    big = arrays["params.big"]
    assert isinstance(big, jax.Array)  # orbax's chunked format for jax leaves
    assert meta["leaves"]["params.big"]["xxh3"] == array_checksum(np.asarray(big))
    check_meta(meta, step_dir="/x/0")  # sealed, and consistent


def test_unpack_rebuilds_every_leaf_exactly_and_places_them():
    record = _record()
    snap, plan = _layout.snapshot(record, group_below=256)
    arrays, meta = _layout.finish(snap, {"step": 0})
    keys = list(meta["leaves"])
    specs = array_specs(meta, keys)
    host = {k: np.asarray(v) for k, v in arrays.items()}  # what orbax hands back
    check_arrays(specs, host, step_dir="/x/0")
    verify_checksums(specs, host, step_dir="/x/0")
    out = _layout.unpack(meta, host, keys, placer(device="cpu"))
    np.testing.assert_array_equal(out["params.w"], record["params"]["w"])
    assert out["params.n"].dtype == jnp.int32 and isinstance(out["params.w"], jax.Array)
    assert isinstance(out["state.np"], np.ndarray) and out["state.np"].flags.writeable
    assert type(out["state.s"]) is np.float32 and out["state.s"] == 2.5
    assert type(out["state.step"]) is int and np.isnan(out["state.x"])
    assert out["rng"].dtype == record["rng"].dtype
    np.testing.assert_array_equal(jax.random.key_data(out["rng"]), jax.random.key_data(record["rng"]))


def test_check_json_says_what_is_accepted():
    assert _layout.check_json({"a": (1, 2)}, "extra") == {"a": [1, 2]}
    with pytest.raises(TypeError, match="extra must be JSON-able"):
        _layout.check_json({"a": object()}, "extra")
    with pytest.raises(TypeError, match="no NaN"):
        _layout.check_json({"a": float("nan")}, "extra")
