"""What was saved is what comes back: Python scalars, numpy and jax leaves, bit for bit
(jaxnets/io/leaves.py)."""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets import FileFormatError, JaxnetsError, nn

DATA = Path(__file__).parent / "data"


def _bits(f: float) -> int:
    return struct.unpack(">Q", struct.pack(">d", f))[0]


def _float(bits: int) -> float:
    return struct.unpack(">d", struct.pack(">Q", bits))[0]


@jaxnets.register(name="tests.io.leaves.Scaled")
@dataclass(frozen=True)
class Scaled(nn.Module):
    """A layer whose buffers hold Python scalars, as a user's layer may."""

    n: int = 3

    def init(self, key):  # type: ignore[no-untyped-def]
        return {"w": jnp.ones(self.n)}, {"scale": 0.1, "steps": 0, "frozen": False}

    def apply(self, params, state, x, *, train=False, key=None):  # type: ignore[no-untyped-def]
        return x * params["w"] * state["scale"], state


# --- Python scalars --------------------------------------------------------------------------------


def test_model_with_python_scalar_buffers_loads_back_in_the_same_process(tmp_path: Path) -> None:
    # The Python float 0.1 was stored as a float64 tensor jax cannot hold: load raised.
    model = Scaled()
    params, state = model.init(jax.random.key(0))
    jaxnets.save(tmp_path / "m.jnet", model, params, state)
    loaded = jaxnets.load(tmp_path / "m.jnet")
    assert loaded.state == {"scale": 0.1, "steps": 0, "frozen": False}
    assert [type(v) for v in loaded.state.values()] == [float, int, bool]
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(loaded.predict(x), model.apply(params, state, x)[0])


def test_every_leaf_kind_comes_back_as_what_it_was(tmp_path: Path) -> None:
    tree = {
        "f": 0.1, "half": 0.5, "i": -(2**63), "u": 2**64 - 1, "b": True, "s": "relu",
        "np": np.arange(3, dtype=np.int64), "np16": np.ones(2, np.float16),
        "npscalar": np.float32(1.5), "npbool": np.bool_(True),
        "jax": jnp.arange(4, dtype=jnp.int8), "key": jax.random.key(5),
    }  # fmt: skip
    jaxnets.save_state_dict(tmp_path / "t.jnet", tree)
    got = jaxnets.load(tmp_path / "t.jnet").params
    assert set(got) == set(tree)
    for k, v in tree.items():
        assert type(got[k]) is type(v), k
        if isinstance(v, (float, int, bool, str)):
            assert got[k] == v, k
        elif k == "key":
            np.testing.assert_array_equal(jax.random.key_data(got[k]), jax.random.key_data(v))
        else:
            assert got[k].dtype == v.dtype, k
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(v))


def test_python_scalars_are_kept_in_the_header_not_as_tensors(tmp_path: Path) -> None:
    jaxnets.save_state_dict(tmp_path / "t.jnet", {"w": np.ones(2), "lr": 0.1, "n": 3, "x": jnp.ones(1)})
    with jaxnets.open(tmp_path / "t.jnet") as r:
        assert list(r.keys()) == ["w", "x"]
        assert r.header["leaves"] == {"model": {"numpy": ["w"], "py": {"lr": 0.1, "n": 3}}}


def test_file_of_jax_arrays_only_has_no_leaves_section(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    jaxnets.save(tmp_path / "m.jnet", model, *model.init(jax.random.key(0)))
    assert "leaves" not in jaxnets.open(tmp_path / "m.jnet").header  # as 0.1 wrote them


def test_python_float_nan_payload_and_signed_zero_keep_their_bits(tmp_path: Path) -> None:
    payload, negzero = _float(0x7FF8000000000ABC), -0.0
    jaxnets.save_state_dict(tmp_path / "t.jnet", {"nan": payload, "z": negzero, "inf": float("-inf")})
    got = jaxnets.load(tmp_path / "t.jnet").params
    assert _bits(got["nan"]) == 0x7FF8000000000ABC and _bits(got["z"]) == _bits(negzero)
    assert got["inf"] == float("-inf")


def test_python_scalars_in_an_optimizer_state_tree(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    params, state = model.init(jax.random.key(0))
    jaxnets.save(tmp_path / "m.jnet", model, params, state, opt_state={"lr": 0.01, "step": 7})
    assert jaxnets.load(tmp_path / "m.jnet").opt_state == {"lr": 0.01, "step": 7}


@pytest.mark.parametrize(
    "value, match",
    [
        (2**64, "does not fit in 64 bits"),
        (-(2**63) - 1, "does not fit in 64 bits"),
        (enum.IntEnum("Mode", "A B").B, "Mode leaf"),
        (1 + 2j, "complex leaf"),
        (b"raw", "bytes leaf"),
    ],
)
def test_python_leaves_that_cannot_come_back_as_they_were_are_refused(
    tmp_path: Path, value: object, match: str
) -> None:
    with pytest.raises(JaxnetsError, match=rf"x: .*{match}") as err:
        jaxnets.save_state_dict(tmp_path / "t.jnet", {"w": np.ones(1), "x": value})
    assert err.value.path == "x" and not (tmp_path / "t.jnet").exists()


# --- old files -------------------------------------------------------------------------------------------


def test_model_file_written_by_jaxnets_0_1_loads(tmp_path: Path) -> None:
    loaded = jaxnets.load(DATA / "v0_1_model.jnet")
    expected = np.load(DATA / "v0_1_model.npz")
    assert loaded.format_version == 1 and loaded.provenance["jaxnets"] == "0.1.0"
    got = {
        **{"m." + k: v for k, v in jaxnets.flatten(loaded.params).items()},
        **{"m." + k: v for k, v in jaxnets.flatten(loaded.state).items()},
        **{"o." + k: v for k, v in jaxnets.flatten(loaded.opt_state).items()},
    }
    assert sorted(got) == sorted(expected.files)
    for k in expected.files:
        assert isinstance(got[k], jax.Array), k
        np.testing.assert_array_equal(np.asarray(got[k]), expected[k], err_msg=k)
        assert got[k].dtype == expected[k].dtype, k
    assert loaded.metadata["epoch"] == 3 and loaded.metadata["scale"] == 0.5
    assert loaded.model == nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_pytree_file_written_by_jaxnets_0_1_loads_as_jax_arrays() -> None:
    params = jaxnets.load(DATA / "v0_1_tree.jnet").params
    assert isinstance(params["layers"][1], tuple) and params["layers"][1][1] is None
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(params))  # 0.1 recorded no kinds
    np.testing.assert_array_equal(params["layers"][0], np.ones(2, np.float32))
    assert params["step"].dtype == jnp.int32 and int(params["step"]) == 5


# --- bits that jax cannot hold (issue 8) ---------------------------------------------------------------------


def _nan_payload_file(path: Path, x64: Any) -> Path:
    with x64(True):
        x = jnp.asarray(np.array([0x7FF0000000000123, 0x7FF8000000000000], np.uint64).view(np.float64))
    jaxnets.save_state_dict(path, {"x": x})
    return path


def test_float64_nan_payload_is_refused_without_x64_naming_the_key(x64, tmp_path: Path) -> None:
    path = _nan_payload_file(tmp_path / "n.jnet", x64)
    with pytest.raises(JaxnetsError, match=r"n\.jnet: x: float64 NaN payloads .*jax_enable_x64.*dtype=\{'x': 'float32'\}"):
        jaxnets.load(path)
    assert np.isnan(jaxnets.load(path, dtype={"x": "float32"}).params["x"]).all()  # on request


def test_float64_nan_payload_keeps_its_bits_with_x64(x64, tmp_path: Path) -> None:
    path = _nan_payload_file(tmp_path / "n.jnet", x64)
    with x64(True):
        x = jaxnets.load(path).params["x"]
        assert x.dtype == jnp.float64
        assert np.asarray(x).view(np.uint64).tolist() == [0x7FF0000000000123, 0x7FF8000000000000]


def test_plain_nan_and_exact_float64_narrow_to_float32(x64, tmp_path: Path) -> None:
    with x64(True):
        x = jnp.array([np.nan, 0.5, -0.0, np.inf])
    jaxnets.save_state_dict(tmp_path / "a.jnet", {"x": x})
    got = jaxnets.load(tmp_path / "a.jnet").params["x"]
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, np.array([np.nan, 0.5, -0.0, np.inf], np.float32))
    assert np.signbit(np.asarray(got)[2])


def test_numpy_float64_nan_payload_comes_back_bit_for_bit(tmp_path: Path) -> None:
    x = np.array([0x7FF0000000000123], np.uint64).view(np.float64)
    jaxnets.save_state_dict(tmp_path / "a.jnet", {"x": x})
    assert jaxnets.load(tmp_path / "a.jnet").params["x"].view(np.uint64)[0] == 0x7FF0000000000123


# --- memory the caller can change -------------------------------------------------------------------------


def test_mutating_a_loaded_numpy_leaf_changes_neither_the_file_nor_a_second_load(tmp_path: Path) -> None:
    path = tmp_path / "t.jnet"
    jaxnets.save_state_dict(path, {"w": np.arange(4, dtype=np.float32), "j": jnp.ones(3)})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for kwargs in ({}, {"dtype": "float16"}, {"device": "cpu"}):
        first = jaxnets.load(path, **kwargs).params
        first["w"][:] = -7  # numpy leaves are the caller's to change (copy-on-write, or a cast copy)
        second = jaxnets.load(path, **kwargs).params
        np.testing.assert_array_equal(second["w"], np.arange(4))
        with pytest.raises(ValueError, match="read-only"):
            np.asarray(first["j"])[0] = 5  # jax leaves are immutable
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


# --- hostile leaves sections -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "leaves, match",
    [
        ("numpy", "groups must be among"),
        ({"evil": {}}, "groups must be among"),
        ({"model": {"eval": []}}, "tags must be among"),
        ({"model": {"numpy": "w"}}, "must be a list of keys"),
        ({"model": {"numpy": ["nope"]}}, "without a tensor"),
        ({"model": {"npscalar": ["w"]}}, "not 0-d"),
        ({"model": {"numpy": ["w"], "npscalar": ["w"]}}, "numpy and as npscalar"),
        ({"model": {"py": {"w": 1.0}}}, "also have a tensor"),
        ({"model": {"py": {"x": [1, 2]}}}, "other types"),
        ({"model": {"py": {"x": None}}}, "other types"),
        ({"model": {"py": {"x": 1.0}}}, "names entries the file lacks|stores entries the structure lacks"),
    ],
)
def test_hostile_leaves_section_is_a_file_format_error(tmp_path: Path, leaves: object, match: str) -> None:
    from crafted_files import write_model_file

    model = nn.Linear(2, 2)
    params, state = model.init(jax.random.key(0))
    params = {"w": params["weight"]}
    path = write_model_file(tmp_path / "m.jnet", None, params, {}, kind="state_dict", leaves=leaves)
    with pytest.raises(FileFormatError, match=rf"m\.jnet: .*({match})"):
        jaxnets.load(path)


def test_inexact_float64_optimizer_state_names_the_key_and_only_the_x64_fix(x64, tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    params, state = model.init(jax.random.key(0))
    with x64(True):
        opt_state = {"lr": jnp.array(0.1, jnp.float64)}  # the optimizer state is never cast
    jaxnets.save(tmp_path / "m.jnet", model, params, state, opt_state=opt_state)
    with pytest.raises(JaxnetsError, match=r"m\.jnet: lr: float64 values .*jax_enable_x64'?, True\)\) before loading\.$"):
        jaxnets.load(tmp_path / "m.jnet")
    with x64(True):
        assert jaxnets.load(tmp_path / "m.jnet").opt_state["lr"].dtype == jnp.float64
