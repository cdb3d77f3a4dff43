"""Complete model files and weights-only files (jaxnets/io/model_file.py)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnets
from jaxnets import FileFormatError, RegistryError, StateDictError, nn
from jaxnets.core import registry

SCRIPTS = Path(__file__).parent / "scripts"


def _model() -> tuple[nn.Module, dict, dict]:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    params, state = model.init(jax.random.key(0))
    return model, params, state


def _equal_trees(a: object, b: object) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert np.asarray(x).dtype == np.asarray(y).dtype


# --- across processes ----------------------------------------------------------------------------------


def _run(*args: str) -> None:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=SCRIPTS)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["builtin", "custom"])
def test_model_saved_in_one_process_trains_on_identically_in_another(
    tmp_path: Path, kind: str
) -> None:
    # save_model.py builds, trains 3 Adam steps and saves; load_model.py never imports it (nor,
    # for built-in layers, any model code): predictions and ONE more step must match bit for bit.
    path, expected, got = tmp_path / "m.jnet", tmp_path / "expected.npz", tmp_path / "got.npz"
    _run(str(SCRIPTS / "save_model.py"), kind, str(path), str(expected))
    _run(str(SCRIPTS / "load_model.py"), kind, str(path), str(got))
    e, g = np.load(expected), np.load(got)
    assert sorted(e) == sorted(g) and "pred" in e and any(k.startswith("opt.") for k in e)
    for k in e:
        np.testing.assert_array_equal(g[k], e[k], err_msg=k)
        assert g[k].dtype == e[k].dtype, k


def test_unregistered_class_in_file_says_how_to_register(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @jaxnets.register(name="tests.io.Gone")
    @dataclass(frozen=True)
    class Gone(nn.Module):
        n: int = 2

        def init(self, key):  # type: ignore[no-untyped-def]
            return {"w": jnp.ones(self.n)}, {}

    model = Gone()
    jaxnets.save(tmp_path / "g.jnet", model, *model.init(jax.random.key(0)), fsync=False)
    monkeypatch.delitem(registry._BY_NAME, "tests.io.Gone")  # as in a process that never defined it
    with pytest.raises(
        RegistryError,
        match=r"g.jnet: the class 'tests.io.Gone' is not registered.*@jaxnets.register",
    ):
        jaxnets.load(tmp_path / "g.jnet")


def test_saving_an_unregistered_layer_names_it(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Mine(nn.Module):
        def init(self, key):  # type: ignore[no-untyped-def]
            return {}, {}

    with pytest.raises(RegistryError, match=r"Mine is not registered.*@jaxnets.register"):
        jaxnets.save(tmp_path / "m.jnet", nn.Sequential(nn.Linear(2, 2), Mine()), {}, {})
    assert not (tmp_path / "m.jnet").exists()


# --- in one process -------------------------------------------------------------------------------------


def test_complete_model_round_trip(tmp_path: Path) -> None:
    model, params, state = _model()
    opt = jaxnets.optim.adam(1e-3)
    opt_state = opt.init(params)
    meta = {"epoch": 3, "classes": ["a", "b"], "mean": np.arange(4.0, dtype=np.float32)}
    jaxnets.save(
        tmp_path / "m.jnet", model, params, state, opt_state=opt_state, optimizer=opt, metadata=meta
    )
    loaded = jaxnets.load(tmp_path / "m.jnet")
    assert loaded.model == model and loaded.optimizer == opt
    _equal_trees(loaded.params, params)
    _equal_trees(loaded.state, state)
    _equal_trees(loaded.opt_state, opt_state)
    assert type(loaded.opt_state[0]) is optax.ScaleByAdamState
    assert loaded.metadata["classes"] == ["a", "b"]
    np.testing.assert_array_equal(loaded.metadata["mean"], meta["mean"])
    assert loaded.provenance["jax"] == jax.__version__ and loaded.format_version == 1
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(
        loaded.model.apply(loaded.params, loaded.state, x)[0], model.apply(params, state, x)[0]
    )


def test_plain_optax_state_round_trips_as_optax_types(tmp_path: Path) -> None:
    model, params, state = _model()
    opt_state = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9)).init(
        params
    )
    jaxnets.save(tmp_path / "m.jnet", model, params, state, opt_state=opt_state)
    loaded = jaxnets.load(tmp_path / "m.jnet")
    _equal_trees(loaded.opt_state, opt_state)
    assert type(loaded.opt_state[1][0]) is optax.TraceState and loaded.optimizer is None


def test_file_keys_are_the_models_state_dict_keys(tmp_path: Path) -> None:
    model, params, state = _model()
    jaxnets.save(tmp_path / "m.jnet", model, params, state, opt_state=optax.adam(1e-3).init(params))
    with jaxnets.open(tmp_path / "m.jnet") as r:
        assert list(r.keys()) == list(jaxnets.state_dict(params, state, model=model))
        assert "0.mu.0.weight" in r.keys("opt_state")
        assert r.kind == "model" and r.model_config == jaxnets.to_config(model)


def test_dtype_policy_by_pattern(tmp_path: Path) -> None:
    model, params, state = _model()
    jaxnets.save(tmp_path / "m.jnet", model, params, state)
    loaded = jaxnets.load(tmp_path / "m.jnet", dtype={"*.weight": "bfloat16"})
    assert loaded.params["0"]["weight"].dtype == jnp.bfloat16
    assert loaded.params["0"]["bias"].dtype == jnp.float32
    np.testing.assert_array_equal(
        loaded.params["0"]["weight"], params["0"]["weight"].astype(jnp.bfloat16)
    )


def test_one_dtype_casts_floats_only(tmp_path: Path) -> None:
    model, params, state = _model()
    jaxnets.save(tmp_path / "m.jnet", model, params, state)
    loaded = jaxnets.load(tmp_path / "m.jnet", dtype="float16")
    assert {x.dtype.name for x in jax.tree.leaves(loaded.params)} == {"float16"}
    assert loaded.state["1"]["num_batches_tracked"].dtype == state["1"]["num_batches_tracked"].dtype


def test_device_and_sharding_placement(tmp_path: Path) -> None:
    model, params, state = _model()
    jaxnets.save(tmp_path / "m.jnet", model, params, state)
    cpu = jax.devices("cpu")[0]
    for kwargs in (
        {"device": "cpu"},
        {"device": cpu},
        {"sharding": jax.sharding.SingleDeviceSharding(cpu)},
    ):
        loaded = jaxnets.load(tmp_path / "m.jnet", **kwargs)
        assert all(x.devices() == {cpu} for x in jax.tree.leaves(loaded.params))
    with pytest.raises(ValueError, match="not both"):
        jaxnets.load(
            tmp_path / "m.jnet", device="cpu", sharding=jax.sharding.SingleDeviceSharding(cpu)
        )


def test_registered_preprocessor_in_metadata(tmp_path: Path) -> None:
    @jaxnets.register(name="tests.io.Prep")
    @dataclass(frozen=True)
    class Prep:
        mean: tuple[float, ...]
        std: tuple[float, ...]

    model, params, state = _model()
    jaxnets.save(
        tmp_path / "m.jnet", model, params, state, metadata={"prep": Prep((0.5, 1.0), (2.0, 3.0))}
    )
    assert jaxnets.load(tmp_path / "m.jnet").metadata["prep"] == Prep((0.5, 1.0), (2.0, 3.0))
    assert jaxnets.open(tmp_path / "m.jnet").metadata_config["prep"]["__class__"] == "tests.io.Prep"


# --- weights only ------------------------------------------------------------------------------------------


def test_state_dict_file_loads_into_model_with_the_same_checks(tmp_path: Path) -> None:
    model, params, state = _model()
    sd = jaxnets.state_dict(params, state, model=model)
    jaxnets.save_state_dict(tmp_path / "w.jnet", sd)
    p2, s2 = jaxnets.load_state_dict(model, tmp_path / "w.jnet")
    _equal_trees(p2, params)
    _equal_trees(s2, state)
    other = nn.Sequential(nn.Linear(4, 9), nn.BatchNorm1d(9), nn.ReLU(), nn.Linear(9, 2))
    with pytest.raises(
        StateDictError,
        match=r"(?s)w.jnet does not fit the model.*0.weight: shape \(8, 4\) in .*w.jnet, \(9, 4\)",
    ):
        jaxnets.load_state_dict(other, tmp_path / "w.jnet")
    report = jaxnets.check_state_dict(other, tmp_path / "w.jnet")
    assert not report.clean and ("0.weight" in {m.path for m in report.shape_mismatch})


def test_state_dict_file_of_torch_tensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    tm = torch.nn.Linear(4, 3)
    sd = {k: v.detach() for k, v in tm.state_dict().items()}
    sd["half"] = torch.arange(3, dtype=torch.bfloat16)
    jaxnets.save_state_dict(tmp_path / "t.jnet", sd)
    with jaxnets.open(tmp_path / "t.jnet") as r:
        assert list(r) == ["weight", "bias", "half"]
        np.testing.assert_array_equal(r["weight"], tm.weight.detach().numpy())
        assert r.infos()["half"] == jaxnets.LeafInfo((3,), "bfloat16")
    p, _ = jaxnets.load_state_dict(nn.Linear(4, 3), {k: v for k, v in sd.items() if k != "half"})
    np.testing.assert_array_equal(p["weight"], tm.weight.detach().numpy())


def test_state_dict_file_of_any_pytree_keeps_its_structure(tmp_path: Path) -> None:
    tree = {"layers": [np.ones(2, np.float32), (np.zeros(3, np.int32), None)], "step": np.array(5)}
    jaxnets.save_state_dict(tmp_path / "t.jnet", tree)
    loaded = jaxnets.load(tmp_path / "t.jnet")
    assert loaded.model is None
    _equal_trees(loaded.params, tree)  # numpy leaves come back as numpy, int64 included
    assert all(type(x) is np.ndarray for x in jax.tree.leaves(loaded.params))
    assert isinstance(loaded.params["layers"][1], tuple)


def test_unregistered_metadata_is_refused_at_save(tmp_path: Path) -> None:
    class Thing:
        pass

    with pytest.raises(RegistryError, match=r"metadata.x: cannot store .*Thing"):
        jaxnets.save_state_dict(tmp_path / "t.jnet", {"w": np.ones(2)}, metadata={"x": Thing()})


def test_reader_path_that_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="missing.jnet.*cannot read"):
        jaxnets.load_state_dict(nn.Linear(2, 2), tmp_path / "missing.jnet")


# --- migrations ----------------------------------------------------------------------------------------------


def _gain_class(version: int, upgrade=None):  # type: ignore[no-untyped-def]
    """The 'same' user class at two versions: v1 stores ``w``, v2 renamed it ``weight``."""
    key = "w" if version == 1 else "weight"

    @dataclass(frozen=True)
    class Gain(nn.Module):
        n: int = 3

        def init(self, k):  # type: ignore[no-untyped-def]
            return {key: jnp.arange(self.n, dtype=jnp.float32)}, {}

        def apply(self, params, state, x, *, train=False, key=None):  # type: ignore[no-untyped-def]
            return x * params["weight"], state

    return jaxnets.register(Gain, name="tests.io.Gain", version=version, upgrade=upgrade)


def _rename(sd: dict, from_version: int) -> dict:
    if from_version < 2:
        sd["weight"] = sd.pop("w")
    return sd


def test_old_layer_version_is_upgraded_on_load(tmp_path: Path) -> None:
    old = _gain_class(1)
    model = nn.Sequential(nn.Linear(3, 3), old())
    params, state = model.init(jax.random.key(0))
    jaxnets.save(tmp_path / "v1.jnet", model, params, state)
    assert jaxnets.open(tmp_path / "v1.jnet").header["versions"]["1"] == ["tests.io.Gain", 1]
    _gain_class(2, _rename)
    loaded = jaxnets.load(tmp_path / "v1.jnet")
    np.testing.assert_array_equal(loaded.params["1"]["weight"], params["1"]["w"])
    assert "w" not in loaded.params["1"]
    y, _ = loaded.model.apply(loaded.params, loaded.state, np.ones((1, 3), np.float32))
    assert y.shape == (1, 3)


def test_missing_upgrade_or_newer_file_is_an_error(tmp_path: Path) -> None:
    _gain_class(2, _rename)
    model = nn.Sequential(_gain_class(2, _rename)())
    jaxnets.save(tmp_path / "v2.jnet", model, *model.init(jax.random.key(0)))
    _gain_class(1)
    with pytest.raises(
        RegistryError, match=r"written by version 2 of the class, this process has version 1"
    ):
        jaxnets.load(tmp_path / "v2.jnet")
    old = nn.Sequential(_gain_class(1)())
    jaxnets.save(tmp_path / "v1.jnet", old, *old.init(jax.random.key(0)))
    _gain_class(2)
    with pytest.raises(RegistryError, match=r"has no upgrade function.*version=2, upgrade=fn"):
        jaxnets.load(tmp_path / "v1.jnet")
