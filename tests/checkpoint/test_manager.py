"""CheckpointManager in one process: exact round trips, templates, keep policies, errors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import jaxnets
from jaxnets.checkpoint import Checkpoint, CheckpointManager
from jaxnets.errors import CheckpointError, RegistryError, StateDictError
from jaxnets.nn import Linear, Sequential


@jaxnets.register(name="tests.checkpoint.OptConfig")
@dataclasses.dataclass(frozen=True)
class OptConfig:
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)


def _tree():
    model = Sequential(Linear(3, 4), Linear(4, 2))
    params, _ = model.init(jax.random.key(0))
    opt_state = optax.adam(1e-3).init(params)
    return model, params, opt_state


def test_restore_without_template_gives_back_exact_types(tmp_path):
    model, params, opt_state = _tree()
    state = {"stats": (jnp.arange(3.0), {1: np.int64(5), 2: 3.5}), "n": 7, "flag": True}
    rng = jax.random.key(3, impl="rbg")
    with CheckpointManager(tmp_path) as mgr:
        mgr.save(
            2,
            params=params,
            state=state,
            opt_state=opt_state,
            rng=rng,
            model=model,
            optimizer=OptConfig(0.5),
            metrics={"loss": jnp.float32(0.25)},
            extra={"loader": {"epoch": 1, "pos": 17}},
        )
    c = CheckpointManager(tmp_path).restore()
    assert isinstance(c, Checkpoint) and c.step == 2
    assert jax.tree.structure(c.opt_state) == jax.tree.structure(opt_state)
    assert isinstance(c.opt_state[0], optax.ScaleByAdamState)
    assert isinstance(c.state["stats"], tuple) and set(c.state["stats"][1]) == {1, 2}
    assert type(c.state["n"]) is int and type(c.state["flag"]) is bool
    assert type(c.state["stats"][1][1]) is np.int64 and c.state["stats"][1][2] == 3.5
    assert c.rng.dtype == rng.dtype
    np.testing.assert_array_equal(jax.random.key_data(c.rng), jax.random.key_data(rng))
    for got, want in zip(jax.tree.leaves(c.params), jax.tree.leaves(params)):
        assert isinstance(got, jax.Array) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert c.model == model and c.optimizer == OptConfig(0.5)
    assert c.metrics == {"loss": 0.25} and c.extra == {"loader": {"epoch": 1, "pos": 17}}


def test_the_directory_is_a_plain_orbax_checkpoint(tmp_path):
    _, params, _ = _tree()
    with CheckpointManager(tmp_path, group_below=0) as mgr:
        mgr.save(1, params=params, extra={"a": 1})
    raw = ocp.CheckpointManager(tmp_path, item_names=("arrays", "meta")).restore(
        1, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), arrays=ocp.args.PyTreeRestore())
    )
    assert raw["meta"]["extra"] == {"a": 1}
    np.testing.assert_array_equal(raw["arrays"]["params.0.weight"], params["0"]["weight"])


def test_a_template_mismatch_names_every_differing_key(tmp_path):
    _, params, _ = _tree()
    with CheckpointManager(tmp_path) as mgr:
        mgr.save(0, params=params)
        like = {
            "0": {"weight": jnp.zeros((4, 5)), "bias": jnp.zeros(4, jnp.int32)},
            "2": {"weight": jnp.zeros(1)},
        }
        with pytest.raises(
            StateDictError, match="1 missing, 2 unexpected, 1 misshapen, 1 mistyped"
        ) as e:
            mgr.restore(like={"params": like})
        msg = str(e.value)
        for key in (
            "params.2.weight",
            "params.1.weight",
            "params.1.bias",
            "params.0.weight",
            "params.0.bias",
        ):
            assert key in msg
        assert "shape (4, 3) in checkpoint step 0, (4, 5) in the template" in msg
        assert set(e.value.missing_keys) == {"params.2.weight"}


def test_template_keeps_its_containers_and_shardings(tmp_path):
    _, params, _ = _tree()
    with CheckpointManager(tmp_path) as mgr:
        mgr.save(0, params=params, rng=jax.random.key(1))
        cpu = jax.devices("cpu")[0]
        like = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(cpu)
            ),
            params,
        )
        c = mgr.restore(like={"params": like})
        np.testing.assert_array_equal(c.params["1"]["bias"], params["1"]["bias"])
        assert c.params["0"]["weight"].sharding == jax.sharding.SingleDeviceSharding(cpu)
        assert c.rng is not None  # fields outside the template come back as stored


def test_partial_restore_skips_only_what_was_asked_and_never_fills(tmp_path):
    _, params, opt_state = _tree()
    with CheckpointManager(tmp_path) as mgr:
        mgr.save(0, params=params, opt_state=opt_state)
        with pytest.raises(StateDictError, match="unexpected"):
            mgr.restore(like={"params": {"0": params["0"]}})
        c = mgr.restore(like={"params": {"0": params["0"]}}, partial=True)
        assert set(c.params) == {"0"} and c.opt_state is None
        np.testing.assert_array_equal(c.params["0"]["weight"], params["0"]["weight"])
        extra = {"0": params["0"], "head": {"weight": jnp.ones(2)}}
        with pytest.raises(StateDictError, match="1 missing") as e:
            mgr.restore(like={"params": extra}, partial=True)
        assert e.value.missing_keys == ["params.head.weight"]
        with pytest.raises(ValueError, match="needs like="):
            mgr.restore(partial=True)


@pytest.mark.parametrize("mode,best", [("min", 2), ("max", 3)])
def test_keep_policy_keeps_the_latest_and_the_best(tmp_path, mode, best):
    losses = [5.0, 4.0, 1.0, 9.0, 3.0, 2.0]
    with CheckpointManager(
        tmp_path, max_to_keep=2, best_metric="loss", best_mode=mode, async_save=False
    ) as mgr:
        for step, loss in enumerate(losses):
            mgr.save(step, params={"w": jnp.full(2, loss)}, metrics={"loss": loss})
        assert mgr.best_step() == best
        assert mgr.all_steps() == sorted({best, 4, 5})
    reopened = CheckpointManager(tmp_path, best_metric="loss", best_mode=mode)
    assert reopened.best_step() == best
    np.testing.assert_array_equal(reopened.restore(best).params["w"], [losses[best]] * 2)


def test_save_every_skips_steps_and_steps_are_write_once(tmp_path):
    with CheckpointManager(tmp_path, save_every=3) as mgr:
        assert [mgr.save(s, params={"w": jnp.ones(1)}) for s in range(7)] == [
            True,
            False,
            False,
            True,
            False,
            False,
            True,
        ]
        assert mgr.all_steps() == [0, 3, 6] and mgr.latest_step() == 6
        with pytest.raises(CheckpointError, match="step 6 is already saved"):
            mgr.save(6, params={"w": jnp.ones(1)}, force=True)
        with pytest.raises(CheckpointError, match="no step 4; saved steps: \\[0, 3, 6\\]"):
            mgr.restore(4)


def test_bad_inputs_raise_before_anything_is_written(tmp_path):
    with CheckpointManager(tmp_path, best_metric="acc") as mgr:
        with pytest.raises(TypeError, match="extra must be JSON-able"):
            mgr.save(0, params={"w": jnp.ones(1)}, extra={"f": object()})
        with pytest.raises(ValueError, match="metrics has no 'acc'"):
            mgr.save(0, params={"w": jnp.ones(1)}, metrics={"loss": 1.0})
        with pytest.raises(TypeError, match="params.fn: cannot checkpoint"):
            mgr.save(0, params={"fn": print})
        with pytest.raises(RegistryError, match="cannot store"):
            mgr.save(0, params={"w": jnp.ones(1)}, optimizer=optax.adam(1e-3))
        assert mgr.all_steps() == []
    with pytest.raises(CheckpointError, match="no checkpoint has been saved"):
        CheckpointManager(tmp_path).restore()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        CheckpointManager(tmp_path / "file")


def test_placement_by_function_and_by_tree(tmp_path):
    _, params, _ = _tree()
    cpu = jax.devices("cpu")[0]
    single = jax.sharding.SingleDeviceSharding(cpu)
    seen = {}

    def fn(key, info):
        seen[key] = info
        return single

    with CheckpointManager(tmp_path, group_below=0) as mgr:
        mgr.save(0, params=params)
        c = mgr.restore(sharding=fn)
        assert seen["params.0.weight"] == jaxnets.LeafInfo((4, 3), "float32")
        assert c.params["0"]["weight"].sharding == single
        c = mgr.restore(sharding={"params": {"0": {"weight": single}}})
        assert c.params["0"]["weight"].sharding == single
        with pytest.raises(ValueError, match="params.9.weight"):
            mgr.restore(sharding={"params": {"9": {"weight": single}}})
        with pytest.raises(ValueError, match="not both"):
            mgr.restore(device="cpu", sharding=single)


def test_packed_and_unpacked_layouts_restore_the_same(tmp_path):
    tree = {
        "a": jnp.arange(10.0),
        "b": jnp.ones((3, 3), jnp.bfloat16),
        "k": jax.random.key(0),
        "big": jnp.arange(300_000, dtype=jnp.int32),
        "np": np.arange(4, dtype=np.uint8),
    }
    out = []
    for g in (0, 1 << 20):
        with CheckpointManager(tmp_path / str(g), group_below=g) as mgr:
            mgr.save(0, params=tree)
            out.append(mgr.restore().params)
    for c in out:
        for k in ("a", "b", "big"):
            assert c[k].dtype == tree[k].dtype
            np.testing.assert_array_equal(np.asarray(c[k]), np.asarray(tree[k]))
        assert isinstance(c["np"], np.ndarray) and c["np"].dtype == np.uint8
        np.testing.assert_array_equal(jax.random.key_data(c["k"]), jax.random.key_data(tree["k"]))


def test_export_writes_the_best_step_as_a_model_file(tmp_path):
    model, params, opt_state = _tree()
    with CheckpointManager(tmp_path / "ckpt", best_metric="loss") as mgr:
        for step, loss in enumerate([3.0, 1.0, 2.0]):
            p = jax.tree.map(lambda x, s=step: x + s, params)
            mgr.save(
                step, params=p, state={}, opt_state=opt_state, model=model, metrics={"loss": loss}
            )
        mgr.export("best", tmp_path / "best.jnet")
    loaded = jaxnets.load(tmp_path / "best.jnet")
    assert loaded.model == model
    for got, want in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want) + 1)
    with CheckpointManager(tmp_path / "nomodel") as mgr:
        mgr.save(0, params=params)
        with pytest.raises(CheckpointError, match="saved without model="):
            mgr.export(0, tmp_path / "x.jnet")


def test_a_donating_jit_right_after_save_does_not_change_what_is_restored(tmp_path, monkeypatch):
    import threading

    from jaxnets.checkpoint import _layout

    params = {
        "small": jnp.arange(1000, dtype=jnp.float32),  # packed
        "big": jnp.arange(1 << 19, dtype=jnp.float32),  # 2 MiB: stored alone
    }
    buffers = np.full(5, 7.0, np.float32)  # a numpy leaf the caller changes in place
    want = {k: np.array(v) for k, v in params.items()}
    step_fn = jax.jit(lambda p: jax.tree.map(lambda x: x * 0 - 1, p), donate_argnums=0)
    # Without a save pending, this jit really reuses the donated buffers.
    probe = {k: v + 0 for k, v in params.items()}
    pointers = {k: v.unsafe_buffer_pointer() for k, v in probe.items()}
    assert step_fn(probe)["big"].unsafe_buffer_pointer() == pointers["big"]

    # The background part of the save waits until the caller has donated and overwritten.
    go = threading.Event()
    finish = _layout.finish
    monkeypatch.setattr(_layout, "finish", lambda *a, **k: (go.wait(30), finish(*a, **k))[1])
    with CheckpointManager(tmp_path) as mgr:
        mgr.save(1, params=params, state={"buf": buffers})
        for _ in range(3):
            params = step_fn(params)
        buffers[:] = -5.0
        jax.block_until_ready(params)
        np.testing.assert_array_equal(params["big"], -1.0)
        go.set()
        mgr.wait()
        c = mgr.restore(1)
    for k in want:
        np.testing.assert_array_equal(np.asarray(c.params[k]), want[k])
    np.testing.assert_array_equal(c.state["buf"], np.full(5, 7.0, np.float32))


def test_bad_arguments_raise_type_or_value_errors_that_say_what_is_accepted(tmp_path):
    with CheckpointManager(tmp_path, async_save=False) as mgr:
        mgr.save(np.int64(0), params={"w": jnp.ones(2)})  # any integer type is a step
        bad_restores = [
            ({"like": [{"w": jnp.ones(2)}]}, TypeError, "like=.* takes a Checkpoint or a mapping"),
            ({"like": {"weights": {}}}, ValueError, "unknown entries 'weights'"),
            ({"step": "abc"}, TypeError, r"restore\(step=...\) takes an int >= 0 or None"),
            ({"step": True}, TypeError, "takes an int >= 0"),
            ({"step": -1}, ValueError, "integers >= 0"),
            ({"device": 3}, TypeError, "device= takes a platform name"),
            ({"device": "tpu"}, ValueError, "no such device"),
            ({"sharding": 3}, TypeError, "sharding= takes a jax.sharding.Sharding"),
            ({"partial": "yes"}, TypeError, "partial must be True or False"),
            ({"verify": 1}, TypeError, "verify must be True or False"),
            (
                {"sharding": jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",)), jax.sharding.PartitionSpec("x", None))},
                ValueError,
                r"these shardings do not fit their leaves:\n  params\.w \[2\]",
            ),
        ]
        for kwargs, exc, match in bad_restores:
            with pytest.raises(exc, match=match):
                mgr.restore(**kwargs)
        bad_saves = [
            ((1.5,), {}, TypeError, r"save\(step=...\) takes an int >= 0, got float"),
            ((1,), {"metrics": [1.0]}, TypeError, "metrics=.* takes a mapping"),
            ((1,), {"metrics": {"loss": "low"}}, TypeError, "'loss' is 'low', not a number"),
            ((1,), {"metrics": {"loss": float("nan")}}, ValueError, "must be finite"),
            ((1,), {"force": "yes"}, TypeError, "force must be True or False"),
            ((1,), {"per_process": 3}, TypeError, r"per_process=...\) takes a key prefix or a tuple"),
            ((1,), {"per_process": ("params.v",)}, ValueError, "'params.v' names no saved leaf"),
        ]
        for args, kwargs, exc, match in bad_saves:
            with pytest.raises(exc, match=match):
                mgr.save(*args, params={"w": jnp.ones(2)}, **kwargs)
        with pytest.raises(TypeError, match=r"metadata\(step=...\) takes an int"):
            mgr.metadata("x")
        with pytest.raises(ValueError, match="use a step number, 'best' or 'latest'"):
            mgr.export("first", tmp_path / "m.jnet")
        with pytest.raises(TypeError, match="export.* takes a str or os.PathLike"):
            mgr.export(0, 3)
        assert mgr.all_steps() == [0]
    bad_options = [
        ({"best_mode": "avg"}, ValueError, "best_mode must be 'min' or 'max'"),
        ({"max_to_keep": 0}, ValueError, "max_to_keep must be >= 1 or None"),
        ({"max_to_keep": "3"}, TypeError, "max_to_keep must be an int >= 1 or None, got str"),
        ({"keep_best": 2}, ValueError, "keep_best needs best_metric="),
        ({"save_every": 0}, ValueError, "save_every must be >= 1"),
        ({"async_save": "no"}, TypeError, "async_save must be True or False"),
        ({"group_below": -1}, ValueError, "group_below must be >= 0"),
        ({"best_metric": 3}, TypeError, "best_metric must be a metric name"),
        ({"sync_timeout": 0}, ValueError, "sync_timeout must be a finite number of seconds > 0"),
        ({"sync_timeout": "5"}, TypeError, "sync_timeout must be a number of seconds"),
    ]
    for kwargs, exc, match in bad_options:
        with pytest.raises(exc, match=match):
            CheckpointManager(tmp_path / "x", **kwargs)
    with pytest.raises(TypeError, match="directory must be a str or os.PathLike"):
        CheckpointManager(3)
