"""jaxnets.load checks a file against the model it names; jaxnets.save refuses what would not load
(jaxnets/io/model_checks.py, jaxnets/io/loading.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from crafted_files import write_model_file

import jaxnets
from jaxnets import FileFormatError, RegistryError, StateDictError, nn
from jaxnets.io import format as fmt
from jaxnets.io import model_checks


def _linear() -> tuple[nn.Linear, dict]:
    model = nn.Linear(4, 3)
    params, _ = model.init(jax.random.key(0))
    return model, params


def _bn_model() -> tuple[nn.Module, dict, dict]:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    params, state = model.init(jax.random.key(0))
    return model, params, state


@pytest.fixture
def no_tensor_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes reading any tensor an error: the checks must work from the header alone."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tensor was read before the check")

    monkeypatch.setattr(fmt, "read_tensors", refuse)
    monkeypatch.setattr(fmt, "read_tensor", refuse)


# --- what a file must agree with -------------------------------------------------------------------


def test_bias_of_the_wrong_shape_is_refused_before_reading_data(
    tmp_path: Path, no_tensor_reads: None
) -> None:
    # Linear(4, 3) with a (1,) bias would broadcast silently in apply.
    model, params = _linear()
    path = write_model_file(tmp_path / "m.jnet", model, {**params, "bias": jnp.zeros(1)}, {})
    with pytest.raises(
        StateDictError,
        match=r"(?s)m\.jnet does not fit the model: 1 misshapen.*bias: shape \(1,\) in .*m\.jnet, "
        r"\(3,\) in the model",
    ) as err:
        jaxnets.load(path)
    assert err.value.file == str(path) and err.value.path == "bias"


def test_transposed_weight_is_refused(tmp_path: Path) -> None:
    model, params = _linear()
    path = write_model_file(tmp_path / "m.jnet", model, {**params, "weight": params["weight"].T}, {})
    with pytest.raises(StateDictError, match=r"weight: shape \(4, 3\) in .*, \(3, 4\) in the model"):
        jaxnets.load(path)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    model, params, state = _bn_model()
    params = {**params, "0": {"weight": params["0"]["weight"][:, :2]}}  # 0.bias missing, misshapen
    params["extra"] = {"w": jnp.ones(2)}
    state = {**state, "1": {**state["1"], "num_batches_tracked": jnp.zeros((), jnp.float32)}}
    path = write_model_file(tmp_path / "m.jnet", model, params, state)
    with pytest.raises(StateDictError) as err:
        jaxnets.load(path)
    e = err.value
    assert e.missing_keys == ["0.bias"] and e.unexpected_keys == ["extra.w"]
    assert [m.path for m in e.report.shape_mismatch] == ["0.weight"]
    assert [(m.path, m.expected, m.got) for m in e.report.dtype_mismatch] == [
        ("1.num_batches_tracked", "int32", "float32")
    ]
    assert "1 missing, 1 unexpected, 1 misshapen, 1 mistyped" in str(e)


@pytest.mark.parametrize("config", [5, "Linear", [1, 2], None])
def test_model_entry_that_is_not_a_model_is_a_file_format_error(tmp_path: Path, config: object) -> None:
    _, params = _linear()
    path = write_model_file(tmp_path / "m.jnet", config, params, {})
    with pytest.raises(FileFormatError, match=r"m\.jnet: the stored 'model' is .*not a model"):
        jaxnets.load(path)


def test_registered_dataclass_that_is_not_a_module_is_refused(tmp_path: Path) -> None:
    @jaxnets.register(name="tests.io.checks.Settings")
    @dataclass(frozen=True)
    class Settings:
        lr: float = 0.1

    path = write_model_file(tmp_path / "m.jnet", Settings(), _linear()[1], {})
    with pytest.raises(FileFormatError, match=r"the stored 'model' is Settings"):
        jaxnets.load(path)


def test_model_whose_stored_hyperparameters_cannot_init_is_a_file_format_error(tmp_path: Path) -> None:
    config = jaxnets.to_config(nn.Linear(4, 3))
    config["config"]["out_features"] = "three"
    path = write_model_file(tmp_path / "m.jnet", config, _linear()[1], {})
    with pytest.raises((FileFormatError, RegistryError), match=r"m\.jnet: .*(cannot be initialised|cannot rebuild)"):
        jaxnets.load(path)


def test_buffer_stored_as_a_parameter_is_refused(tmp_path: Path) -> None:
    model, params, state = _bn_model()
    params = {**params, "1": {**params["1"], "running_mean": state["1"]["running_mean"]}}
    state = {**state, "1": {k: v for k, v in state["1"].items() if k != "running_mean"}}
    path = write_model_file(tmp_path / "m.jnet", model, params, state)
    with pytest.raises(StateDictError, match=r"stored params are not structured as the model's") as err:
        jaxnets.load(path)
    assert err.value.unexpected_keys == ["1.running_mean"]


def test_list_where_the_model_has_a_dict_is_refused(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    params, state = model.init(jax.random.key(0))
    path = write_model_file(tmp_path / "m.jnet", model, [params["0"]], [{}])  # keys "0.weight"...
    with pytest.raises(StateDictError, match=r"not structured as the model's"):
        jaxnets.load(path)


def test_optimizer_state_of_other_params_is_refused_before_reading_data(
    tmp_path: Path, no_tensor_reads: None
) -> None:
    model, params, state = _bn_model()
    opt = jaxnets.optim.adam(1e-3)
    other = opt.init({"0": {"weight": jnp.ones((8, 4))}})  # mu/nu of one tensor only
    path = write_model_file(tmp_path / "m.jnet", model, params, state, opt_state=other, optimizer=opt)
    with pytest.raises(
        StateDictError, match=r"(?s)m\.jnet \(optimizer state\) does not fit optimizer\.init\(params\).*0\.mu\.0\.bias"
    ) as err:
        jaxnets.load(path)
    assert "0.mu.3.weight" in err.value.missing_keys


def test_optimizer_state_of_another_optimizer_is_refused(tmp_path: Path) -> None:
    model, params, state = _bn_model()
    sgd_state = jaxnets.optim.sgd(0.1, momentum=0.9).init(params)
    path = write_model_file(
        tmp_path / "m.jnet", model, params, state, opt_state=sgd_state, optimizer=jaxnets.optim.adam(1e-3)
    )
    with pytest.raises(StateDictError, match=r"optimizer state"):
        jaxnets.load(path)


def test_optimizer_entry_that_is_not_an_optimizer_is_refused(tmp_path: Path) -> None:
    model, params, state = _bn_model()
    path = write_model_file(tmp_path / "m.jnet", model, params, state, optimizer=nn.ReLU())
    with pytest.raises(FileFormatError, match=r"the stored 'optimizer' is ReLU"):
        jaxnets.load(path)


def test_the_model_check_runs_once_on_every_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = model_checks.check_fits
    monkeypatch.setattr(
        model_checks, "check_fits", lambda *a, **k: (calls.append(k["expected_name"]), real(*a, **k))[1]
    )
    model, params, state = _bn_model()
    jaxnets.save(tmp_path / "m.jnet", model, params, state)
    calls.clear()
    jaxnets.load(tmp_path / "m.jnet")
    jaxnets.load(tmp_path / "m.jnet", dtype="bfloat16", device="cpu")
    assert calls == ["the model", "the model"]


# --- dtypes -----------------------------------------------------------------------------------------


def test_model_cast_to_bfloat16_before_saving_loads_as_saved(tmp_path: Path) -> None:
    model, params, state = _bn_model()
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)  # buffers stay float32/int32
    jaxnets.save(tmp_path / "m.jnet", model, half, state)
    loaded = jaxnets.load(tmp_path / "m.jnet")
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(half)):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert loaded.state["1"]["running_var"].dtype == jnp.float32


def test_integer_entry_of_another_dtype_is_refused_unless_cast(tmp_path: Path) -> None:
    model, params, state = _bn_model()
    state = {**state, "1": {**state["1"], "num_batches_tracked": jnp.array(5, jnp.int16)}}
    path = write_model_file(tmp_path / "m.jnet", model, params, state)
    with pytest.raises(
        StateDictError, match=r"(?s)1 mistyped.*1\.num_batches_tracked: dtype int16 in .*m\.jnet, int32 in the model.*dtype="
    ):
        jaxnets.load(path)
    loaded = jaxnets.load(path, dtype={"*.num_batches_tracked": "int32"})
    assert loaded.state["1"]["num_batches_tracked"].dtype == jnp.int32
    assert int(loaded.state["1"]["num_batches_tracked"]) == 5


def test_float_where_the_model_has_an_integer_is_refused(tmp_path: Path) -> None:
    model, params, state = _bn_model()
    state = {**state, "1": {**state["1"], "num_batches_tracked": jnp.array(5.0)}}
    with pytest.raises(StateDictError, match=r"num_batches_tracked: dtype float32 in .*, int32 in the model"):
        jaxnets.load(write_model_file(tmp_path / "m.jnet", model, params, state))


def test_prng_key_of_another_implementation_is_refused(tmp_path: Path) -> None:
    @jaxnets.register(name="tests.io.checks.Noisy")
    @dataclass(frozen=True)
    class Noisy(nn.Module):
        def init(self, key):  # type: ignore[no-untyped-def]
            return {}, {"rng": jax.random.key(0)}

    path = write_model_file(tmp_path / "m.jnet", Noisy(), {}, {"rng": jax.random.key(0, impl="rbg")})
    with pytest.raises(StateDictError, match=r"rng: dtype key<rbg> in .*, key<fry> in the model"):
        jaxnets.load(path)
    jaxnets.save(tmp_path / "ok.jnet", Noisy(), {}, {"rng": jax.random.key(3)})
    k = jaxnets.load(tmp_path / "ok.jnet").state["rng"]
    np.testing.assert_array_equal(jax.random.key_data(k), jax.random.key_data(jax.random.key(3)))


def test_int64_counter_from_a_64_bit_process_loads_as_int32(x64, tmp_path: Path) -> None:
    model, params, state = _bn_model()
    with x64(True):
        count = jnp.array(7, jnp.int64)
    state = {**state, "1": {**state["1"], "num_batches_tracked": count}}
    loaded = jaxnets.load(write_model_file(tmp_path / "m.jnet", model, params, state))
    assert loaded.state["1"]["num_batches_tracked"].dtype == jnp.int32
    assert int(loaded.state["1"]["num_batches_tracked"]) == 7


# --- save refuses what would not load ------------------------------------------------------------------


def test_save_refuses_params_that_do_not_fit_and_keeps_the_old_file(tmp_path: Path) -> None:
    model, params = _linear()
    path = tmp_path / "m.jnet"
    jaxnets.save(path, model, params, {})
    before = path.read_bytes()
    with pytest.raises(
        StateDictError,
        match=r"(?s)save\(params, state\) does not fit the model.*bias: shape \(1,\).*Nothing was written",
    ):
        jaxnets.save(path, model, {**params, "bias": jnp.zeros(1)}, {})
    assert path.read_bytes() == before


def test_save_refuses_what_is_not_a_model_or_optimizer(tmp_path: Path) -> None:
    _, params = _linear()
    with pytest.raises(TypeError, match=r"model must be a model .* got int"):
        jaxnets.save(tmp_path / "m.jnet", 5, params, {})
    with pytest.raises(TypeError, match=r"optimizer must be .* got str"):
        jaxnets.save(tmp_path / "m.jnet", nn.Linear(4, 3), params, {}, optimizer="adam")
    assert not (tmp_path / "m.jnet").exists()


def test_save_refuses_an_optimizer_state_of_other_params(tmp_path: Path) -> None:
    model, params, state = _bn_model()
    opt = jaxnets.optim.adam(1e-3)
    with pytest.raises(StateDictError, match=r"save\(opt_state=\.\.\.\) does not fit optimizer\.init"):
        jaxnets.save(tmp_path / "m.jnet", model, params, state, optimizer=opt,
                     opt_state=opt.init({"w": jnp.ones(3)}))  # fmt: skip


def test_model_without_buffers_saved_with_state_none_loads_with_its_empty_state(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    params, state = model.init(jax.random.key(0))
    jaxnets.save(tmp_path / "m.jnet", model, params)  # state omitted
    loaded = jaxnets.load(tmp_path / "m.jnet")
    assert loaded.state == state == {"0": {}, "1": {}}
    x = jnp.ones((2, 4))
    np.testing.assert_array_equal(loaded.model.apply(loaded.params, loaded.state, x)[0],
                                  model.apply(params, state, x)[0])  # fmt: skip


# --- upgrades: checked after them ----------------------------------------------------------------------


def test_upgrade_that_produces_the_wrong_shape_is_caught(tmp_path: Path) -> None:
    def make(version: int, upgrade=None):  # type: ignore[no-untyped-def]
        @dataclass(frozen=True)
        class Scale(nn.Module):
            n: int = 3

            def init(self, k):  # type: ignore[no-untyped-def]
                return {("s" if version == 1 else "scale"): jnp.ones(self.n)}, {}

        return jaxnets.register(Scale, name="tests.io.checks.Scale", version=version, upgrade=upgrade)

    old = make(1)()
    jaxnets.save(tmp_path / "v1.jnet", old, *old.init(jax.random.key(0)))
    make(2, lambda sd, v: {"scale": sd["s"][:2]})  # a buggy migration
    with pytest.raises(StateDictError, match=r"(?s)v1\.jnet \(after upgrades\) does not fit the model.*scale: shape \(2,\)"):
        jaxnets.load(tmp_path / "v1.jnet")
    make(2, lambda sd, v: {"scale": sd["s"] * 2})
    np.testing.assert_array_equal(jaxnets.load(tmp_path / "v1.jnet").params["scale"], 2 * np.ones(3))
    make(2, lambda sd, v: 1 / 0)
    with pytest.raises(RegistryError, match=r"upgrade function of tests\.io\.checks\.Scale failed .*ZeroDivisionError"):
        jaxnets.load(tmp_path / "v1.jnet")


def test_optimizer_state_of_the_old_layout_is_refused_after_an_upgrade(tmp_path: Path) -> None:
    def make(version: int, upgrade=None):  # type: ignore[no-untyped-def]
        @dataclass(frozen=True)
        class Gain(nn.Module):
            def init(self, k):  # type: ignore[no-untyped-def]
                return {("w" if version == 1 else "weight"): jnp.ones(3)}, {}

        return jaxnets.register(Gain, name="tests.io.checks.Gain", version=version, upgrade=upgrade)

    old = make(1)()
    params, state = old.init(jax.random.key(0))
    opt = jaxnets.optim.adam(1e-3)
    jaxnets.save(tmp_path / "v1.jnet", old, params, state, opt_state=opt.init(params), optimizer=opt)
    make(2, lambda sd, v: {"weight": sd["w"]})
    with pytest.raises(
        StateDictError, match=r"(?s)optimizer state\) does not fit optimizer\.init\(params\).*0\.mu\.weight.*not the optimizer state"
    ):
        jaxnets.load(tmp_path / "v1.jnet")


def test_adam_state_keeps_loading_with_its_model(tmp_path: Path) -> None:
    model, params, state = _bn_model()
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    jaxnets.save(tmp_path / "m.jnet", model, params, state, opt_state=opt.init(params),
                 optimizer=jaxnets.optim.chain(jaxnets.optim.clip_by_global_norm(1.0),
                                               jaxnets.optim.adam(1e-3)))  # fmt: skip
    loaded = jaxnets.load(tmp_path / "m.jnet")
    assert type(loaded.opt_state[1][0]) is optax.ScaleByAdamState
