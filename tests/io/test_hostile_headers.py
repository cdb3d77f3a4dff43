"""Header fields that lie give jaxnets errors, never raw exceptions (issue 8, item 4).

Every file here is valid msgpack with correct checksums (written by ``jaxnets.io.format.write_file``
with the tensors of a real model), so what is exercised is the meaning of the fields: ``kind``,
``trees``, ``versions``, ``model``, ``optimizer``, ``metadata``, ``leaves``, ``provenance``.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

import jaxnets
from jaxnets import FileFormatError, JaxnetsError, RegistryError, StateDictError, nn
from jaxnets.io import format as fmt


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[fmt.TensorSource]]:
    """The header fields and tensors of a real model file (model, optimizer state, metadata)."""
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    params, state = model.init(jax.random.key(0))
    opt = jaxnets.optim.adam(1e-3)
    path = tmp_path_factory.mktemp("good") / "good.jnet"
    jaxnets.save(path, model, params, state, opt_state=opt.init(params), optimizer=opt,
                 metadata={"mean": np.arange(3.0), "scale": 0.5}, fsync=False)  # fmt: skip
    with jaxnets.open(path) as r:
        fields = dict(r.header)
        entries = [*r.entries("model").values(), *r.entries("opt_state").values()]
        data = r.read_all()
    sources = []
    for e in entries:
        value = data[e.group][e.key]
        arr = np.asarray(jax.random.key_data(value) if e.prng_impl else value)
        sources.append(fmt.TensorSource(e.key, e.group, e.dtype, tuple(e.shape), lambda a=arr: a, e.prng_impl))
    return fields, sources


def _load_with(tmp_path: Path, good: Any, **changes: Any) -> None:
    fields, sources = good
    path = tmp_path / "h.jnet"
    fmt.write_file(path, sources, {**fields, **changes}, fsync=False)
    jaxnets.load(path)


def test_the_unchanged_fields_load(tmp_path: Path, good: Any) -> None:
    _load_with(tmp_path, good)  # so each case below fails for its own field


_LINEAR = {"__class__": "nn.Linear", "config": {"in_features": 2, "out_features": 3, "bias": True}}


@pytest.mark.parametrize(
    "changes, error, match",
    [
        # kind
        ({"kind": 5}, FileFormatError, "unknown file kind 5"),
        ({"kind": ["model"]}, FileFormatError, "unknown file kind"),
        # trees
        ({"trees": [1]}, FileFormatError, "malformed tree structures"),
        ({"trees": {"params": 5}}, FileFormatError, "malformed tree structures"),
        ({"trees": {"evil": {}}}, FileFormatError, "malformed tree structures"),
        ({"trees": {"params": {"t": "dict", "k": [True], "c": [{"t": "leaf"}]}}}, FileFormatError, "params structure"),
        ({"trees": {"params": {"t": "class", "name": "nn.Linear", "k": ["in_features"], "c": [{"t": "leaf"}]}}},
         FileFormatError, "params"),
        ({"trees": {"params": {"t": "class", "name": "os.system", "k": [], "c": []}}}, FileFormatError, "disagrees with itself"),
        # versions
        ({"versions": {b"0": ["nn.Linear", 1]}}, FileFormatError, "malformed class versions"),
        ({"versions": [["nn.Linear", 1]]}, FileFormatError, "malformed class versions"),
        ({"versions": {"0": "nn.Linear"}}, FileFormatError, "malformed class version entry at '0'"),
        ({"versions": {"0": ["nn.Linear", "1"]}}, FileFormatError, "malformed class version entry"),
        ({"versions": {"0": ["nn.Linear", 2**63]}}, RegistryError, "written by version 9223372036854775808"),
        ({"versions": {"0": ["os.system", 1]}}, RegistryError, "'os.system' is not registered"),
        # model
        ({"model": 5}, FileFormatError, "the stored 'model' is int"),
        # nonsense sizes fail the shape check or the abstract init, whichever meets them first
        ({"model": {**_LINEAR, "config": {"in_features": -1, "out_features": 3}}}, (StateDictError, FileFormatError), "does not fit the model|cannot be initialised"),
        ({"model": {**_LINEAR, "config": {"in_features": 2**63, "out_features": 3}}}, StateDictError, "does not fit the model"),
        ({"model": {**_LINEAR, "config": {"in_features": 2.5, "out_features": 3}}}, (StateDictError, FileFormatError), "does not fit the model|cannot be initialised"),
        ({"model": {**_LINEAR, "config": 5}}, FileFormatError, "config of nn.Linear is not a dict"),
        ({"model": {"__class__": ["x"], "config": {}}}, RegistryError, "is not registered"),
        ({"model": {"__class__": "nn.Sequential", "config": {"layers": 5}}}, RegistryError, "cannot rebuild nn.Sequential"),
        ({"model": {"__class__": "nn.Sequential", "config": {}}}, RegistryError, "cannot rebuild nn.Sequential .*KeyError"),
        ({"model": _LINEAR}, StateDictError, "does not fit the model: 2 missing, 7 unexpected"),
        ({"model": {"__tuple__": [1]}}, FileFormatError, "not a model"),
        # optimizer
        ({"optimizer": "adam"}, FileFormatError, "the stored 'optimizer' is str"),
        ({"optimizer": {"__class__": "optim.adam", "config": {"learning_rate": {"a": 1}}}}, RegistryError, "cannot rebuild optim.adam"),
        ({"optimizer": {"__class__": "optim.sgd", "config": {"learning_rate": 0.1}}}, StateDictError, "optimizer state"),
        # metadata
        ({"metadata": {"__array__": [300], "dtype": "int8", "shape": [1]}}, FileFormatError, "out of range for int8|int8 cannot hold exactly"),
        ({"metadata": {"__array__": [2**64 - 1], "dtype": "int64", "shape": [1]}}, FileFormatError, "out of range for int64"),
        ({"metadata": {"__array__": [-1], "dtype": "uint8", "shape": [1]}}, FileFormatError, "out of range for uint8|uint8 cannot hold exactly"),
        ({"metadata": {"__array__": [1e300], "dtype": "float16", "shape": [1]}}, FileFormatError, "cannot hold exactly"),
        ({"metadata": {"__array__": [2], "dtype": "bool", "shape": [1]}}, FileFormatError, "cannot hold exactly"),
        ({"metadata": {"__array__": [1, 2], "dtype": "int32", "shape": [-2]}}, FileFormatError, "does not hold 2 values"),
        ({"metadata": {"__array__": [1, 2], "dtype": "int32", "shape": [2**62, 0]}}, FileFormatError, "does not hold"),
        ({"metadata": {"__array__": [[1]], "dtype": "int32", "shape": [1]}}, FileFormatError, "flat list of numbers"),
        ({"metadata": {"__array__": [1], "dtype": "datetime64[s]", "shape": [1]}}, FileFormatError, "not a numeric dtype"),
        ({"metadata": {"__array__": [1], "dtype": 5, "shape": [1]}}, FileFormatError, "not a numeric dtype"),
        ({"metadata": {"__array__": [1], "dtype": "(2,)i4", "shape": [1]}}, FileFormatError, "not a numeric dtype"),
        ({"metadata": {"__tuple__": "abc"}}, FileFormatError, "__tuple__ that is not a list"),
        ({"metadata": {"__tuple__": [], "x": 1}}, FileFormatError, "tagged dict"),
        ({"metadata": {"a": b"bytes"}}, FileFormatError, "unexpected value"),
        ({"metadata": _LINEAR | {"config": {"in_features": "x"}}}, RegistryError, "cannot rebuild nn.Linear"),
        # leaves
        ({"leaves": {"model": {"py": {"0.weight": 1.0}}}}, FileFormatError, "also have a tensor"),
        ({"leaves": 5}, FileFormatError, "malformed 'leaves' section"),
    ],
)  # fmt: skip
def test_hostile_field(tmp_path: Path, good: Any, changes: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=rf"h\.jnet.*{match}"):
        _load_with(tmp_path, good, **changes)


def test_metadata_nested_absurdly_deep(tmp_path: Path, good: Any) -> None:
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(FileFormatError, match=r"h\.jnet.*nested deeper than 64"):
        _load_with(tmp_path, good, metadata=deep)


def test_provenance_of_another_type_is_ignored(tmp_path: Path, good: Any) -> None:
    _load_with(tmp_path, good, provenance=[1, 2], jaxnets_version=5)  # for humans only


# --- a seeded search over mutated fields -----------------------------------------------------------------

_ATOMS: list[Any] = [
    None, True, False, 0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, float("nan"), float("inf"), "",
    "model", "state_dict", "__tuple__", "__class__", "__array__", "nn.Linear", "optim.adam",
    "nn.Sequential", "nn.BatchNorm1d", "optax.ScaleByAdamState", "dict", "leaf", "none", "class",
    "list", "tuple", "int64", "float16", "object", "uint8", "bool", "V8", "<U3", b"x", "params",
    "state", "opt_state", "numpy", "npscalar", "py", "0.weight", "1.running_mean", "t", "k", "c",
    "name", "config", "dtype", "shape", "layers",
]  # fmt: skip
_STRINGS = [a for a in _ATOMS if isinstance(a, str)]
_FIELDS = ["kind", "trees", "versions", "model", "optimizer", "metadata", "leaves"]


def _random(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 4 or r < 0.45:
        return rng.choice(_ATOMS)
    if r < 0.7:
        return [_random(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(_STRINGS): _random(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """``value`` with one small change somewhere inside it (a replaced, removed or added item)."""
    if rng.random() < 0.15 or depth > 8:
        return _random(rng)
    if isinstance(value, dict) and value:
        value = dict(value)
        key = rng.choice(list(value))
        op = rng.random()
        if op < 0.6:
            value[key] = _mutate(rng, value[key], depth + 1)
        elif op < 0.75:
            del value[key]
        elif op < 0.9:
            value[rng.choice(_STRINGS)] = _random(rng)
        else:
            value[b"bytes key"] = value.pop(key)
        return value
    if isinstance(value, list) and value:
        value = list(value)
        i = rng.randrange(len(value))
        op = rng.random()
        if op < 0.6:
            value[i] = _mutate(rng, value[i], depth + 1)
        elif op < 0.8:
            del value[i]
        else:
            value.append(_random(rng))
        return value
    return _random(rng)


def test_mutated_header_fields_give_only_jaxnets_errors(tmp_path: Path, good: Any) -> None:
    fields, sources = good
    rng = random.Random(20240808)
    outcomes: dict[str, int] = {}
    for i in range(1000):
        changed = dict(fields)
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(_FIELDS)
            changed[name] = _mutate(rng, changed.get(name)) if rng.random() < 0.8 else _random(rng)
        path = tmp_path / f"h{i}.jnet"
        fmt.write_file(path, sources, changed, fsync=False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a numpy/jax warning would be a silent half-answer
                jaxnets.load(path)
            outcome = "loaded"
        except JaxnetsError as e:
            assert e.file == str(path) or str(path) in str(e), (changed, e)
            outcome = type(e).__name__
        except Exception as e:  # pragma: no cover - the failure this test exists to catch
            pytest.fail(f"{type(e).__name__}: {e}\nfields: { {k: changed.get(k) for k in _FIELDS} }")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        path.unlink()
    # The search reaches past the first checks: some files load, the rest fail in several ways.
    assert outcomes.get("loaded", 0) > 10 and len(outcomes) >= 4, outcomes


def test_key_in_both_params_and_state_structures_is_refused(tmp_path: Path, good: Any) -> None:
    fields, _ = good
    trees = dict(fields["trees"])
    state = trees["state"]
    trees["state"] = {"t": "dict", "k": [*state["k"], "0"], "c": [*state["c"], {"t": "dict", "k": ["weight"], "c": [{"t": "leaf"}]}]}
    with pytest.raises(FileFormatError, match=r"h\.jnet: the header disagrees with itself.*name an entry twice"):
        _load_with(tmp_path, good, trees=trees)
