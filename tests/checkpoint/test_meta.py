"""The one metadata reader: lies in a step's ``meta`` are caught before any array is sliced.

The lies here are *valid JSON with a recomputed checksum* (as an edit, or a bug in a writer,
would make them), so the structural checks, not the checksum, must catch them: with
``verify=False`` as well as with ``verify=True``.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets.checkpoint import CheckpointManager
from jaxnets.checkpoint.meta import check_meta, read_meta, seal
from jaxnets.errors import CheckpointError


def _save(root: Path) -> dict[str, Any]:
    params = {
        "w": jnp.arange(12.0).reshape(3, 4),
        "b": jnp.ones(4),
        "n": jnp.arange(5, dtype=jnp.int32),
        "big": jnp.arange(400.0),  # 1600 bytes: stored alone (group_below=1024)
    }
    with CheckpointManager(root, group_below=1024, async_save=False) as mgr:
        mgr.save(
            4,
            params=params,
            opt_state=optax.adam(1e-3).init(params),
            rng=jax.random.key(0),
            state={"epoch": 2},
            metrics={"loss": 1.5},
        )
    return read_meta(root / "4")


@pytest.fixture
def ckpt(tmp_path):
    return tmp_path, _save(tmp_path)


def _write(root: Path, meta: dict[str, Any]) -> None:
    (root / "4" / "meta" / "metadata").write_text(json.dumps(meta))


def _lie(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def apply(meta: dict[str, Any]) -> dict[str, Any]:
        meta = copy.deepcopy(meta)
        fn(meta)
        return seal(meta)  # the checksum agrees: only the structural checks can catch it

    return apply


def _set(path: tuple, value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(meta: dict[str, Any]) -> None:
        node = meta
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    return fn


def _rename(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def fn(meta: dict[str, Any]) -> None:
        meta["leaves"] = {(new if k == old else k): v for k, v in meta["leaves"].items()}

    return fn


LIES = {
    # name: (edit, words the error must contain)
    "packed offset +1": (lambda m: m["leaves"]["params.b"].update(offset=m["leaves"]["params.b"]["offset"] + 1), ["params.b", "offset"]),
    "packed shape changed": (_set(("leaves", "params.w", "shape"), [3, 5]), ["params."]),
    "packed dtype changed": (_set(("leaves", "params.w", "dtype"), "int32"), ["params.w", "int32"]),
    "group length +1": (lambda m: m["groups"]["float32"].update(length=m["groups"]["float32"]["length"] + 1), ["float32", "add up"]),
    "group removed": (lambda m: m["groups"].pop("int32"), ["params.n", "int32"]),
    "single shape changed": (_set(("leaves", "params.big", "shape"), [401]), ["params.big", "401"]),
    "single dtype changed": (_set(("leaves", "params.big", "dtype"), "int32"), ["params.big", "int32"]),
    "key renamed": (_rename("opt_state.0.count", "opt_state.0.cnt"), ["opt_state.0.count"]),
    "kind changed": (_set(("leaves", "params.b", "kind"), "py"), ["params.b"]),
    "unknown kind": (_set(("leaves", "params.b", "kind"), "pickle"), ["params.b", "pickle"]),
    "huge shape": (_set(("leaves", "params.big", "shape"), [2**61, 2**61]), ["params.big"]),
    "negative dim": (_set(("leaves", "params.b", "shape"), [-4]), ["params.b"]),
    "shape of strings": (_set(("leaves", "params.b", "shape"), ["4"]), ["params.b"]),
    "negative offset": (_set(("leaves", "params.b", "offset"), -1), ["params.b"]),
    "unknown prng impl": (_set(("leaves", "rng", "impl"), "bogus"), ["rng", "bogus"]),
    "py value of another type": (_set(("leaves", "state.epoch", "value"), "two"), ["state.epoch"]),
    "malformed spec": (_set(("spec", "t"), "bogus"), ["spec"]),
    "other step": (_set(("step",), 5), ["step"]),
    "metrics not numbers": (_set(("metrics",), {"loss": "low"}), ["metrics"]),
    "malformed checksum": (_set(("leaves", "params.big", "xxh3"), "zz"), ["params.big", "checksum"]),
}


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_meta_is_a_checkpoint_error_naming_the_step_and_key(ckpt, lie, verify):
    root, meta = ckpt
    edit, words = LIES[lie]
    _write(root, _lie(edit)(meta))
    with pytest.raises(CheckpointError, match=r"\(step 4\)") as e:
        CheckpointManager(root).restore(4, verify=verify)
    for w in words:
        assert w in str(e.value), f"{lie}: {w!r} not in {e.value}"


def test_an_unsealed_edit_fails_the_checksum_and_verify_false_still_checks_the_structure(ckpt):
    root, meta = ckpt
    edited = copy.deepcopy(meta)
    edited["leaves"]["params.b"]["offset"] += 1  # the old bug: a shifted packed leaf
    _write(root, edited)
    with pytest.raises(CheckpointError, match=r"step 4\).*does not match its checksum"):
        CheckpointManager(root).restore(4)
    with pytest.raises(CheckpointError, match=r"params\.b: offset 13 in group float32, but the leaves before it end at 12"):
        CheckpointManager(root).restore(4, verify=False)


def test_a_newer_format_or_a_foreign_json_is_refused(ckpt):
    root, meta = ckpt
    _write(root, seal({**meta, "version": 99}))
    with pytest.raises(CheckpointError, match="newer jaxnets .*format 99"):
        read_meta(root / "4")
    _write(root, {"hello": "world"})
    with pytest.raises(CheckpointError, match="not a jaxnets checkpoint"):
        read_meta(root / "4", verify=False)
    (root / "4" / "meta" / "metadata").write_text('{"format": "jaxnets.checkpoint", "vers')
    with pytest.raises(CheckpointError, match=r"\(step 4\): cannot read the checkpoint metadata"):
        read_meta(root / "4")


def test_every_single_bit_flip_of_the_meta_text_is_caught_or_harmless(ckpt):
    root, meta = ckpt
    text = json.dumps(meta).encode()
    rnd = random.Random(1)
    caught = 0
    for pos in range(len(text)):  # every byte, one seeded bit each
        damaged = bytearray(text)
        damaged[pos] ^= 1 << rnd.randrange(8)
        try:
            parsed = json.loads(bytes(damaged))
        except ValueError:
            caught += 1  # read_meta turns this into a CheckpointError (tested above)
            continue
        try:
            check_meta(parsed, step_dir=str(root / "4"))
        except CheckpointError as e:
            assert "(step 4)" in str(e)
            caught += 1
            continue
        assert parsed == meta, f"byte {pos}: a changed meta passed the checks"
    assert caught > 0.9 * len(text)


def test_format_1_checkpoints_read_without_verify_only(ckpt):
    root, meta = ckpt
    old = copy.deepcopy(meta)
    del old["xxh3"]
    old["version"] = 1
    old["groups"] = {dt: g["length"] for dt, g in old["groups"].items()}
    for e in old["leaves"].values():
        e.pop("xxh3", None)
    _write(root, old)
    with pytest.raises(CheckpointError, match="no checksum is stored .*verify=False"):
        CheckpointManager(root).restore(4)
    c = CheckpointManager(root).restore(4, verify=False)
    np.testing.assert_array_equal(c.params["w"], np.arange(12.0).reshape(3, 4))
    assert int(c.opt_state[0].count) == 0 and c.state == {"epoch": 2}
