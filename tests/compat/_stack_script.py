"""One side of the cross-stack test, run by a venv's own Python (see test_cross_stack.py).

    python _stack_script.py write DIR   # 8 CPU devices: train, shard, save a model file + checkpoint
    python _stack_script.py read DIR    # 1 device: load both back onto the CPU

Each side dumps what it holds (raw bytes of every leaf, typed keys as key_data + impl) into
DIR/<side>.npz and DIR/<side>.json, so the test can compare them bit for bit from any numpy.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxnets  # noqa: E402
from jaxnets import nn, optim  # noqa: E402

MODEL = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 16)
)
OPT = optim.adam(1e-2)
X = np.asarray(np.random.default_rng(0).normal(size=(4, 3, 6, 6)), np.float32)
STEP = 3


def _dump(side: str, out: Path, groups: dict[str, Any], y: Any) -> None:
    arrays: dict[str, np.ndarray] = {"y": np.asarray(y)}
    impls: dict[str, str] = {}
    for group, tree in groups.items():
        for k, v in jaxnets.flatten(tree).items():
            name = f"{group}/{k}"
            if isinstance(v, jax.Array) and jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key):
                impls[name] = str(v.dtype)  # key<fry>: the same on every jax, unlike impl names
                v = jax.random.key_data(v)
            arrays[name] = np.asarray(v)
    np.savez(out / f"{side}.npz", **arrays)
    versions = {p: metadata.version(p) for p in ("jax", "jaxlib", "numpy", "orbax-checkpoint", "optax")}
    info = {"versions": versions, "python": sys.version.split()[0], "devices": len(jax.devices()),
            "keys": impls}
    (out / f"{side}.json").write_text(json.dumps(info, indent=1))


def write(out: Path) -> None:
    assert len(jax.devices()) == 8, jax.devices()
    params, state = MODEL.init(jax.random.key(0))
    opt_state = OPT.init(params)

    @jax.jit
    def step(params, state, opt_state, x):
        def loss_fn(p):
            y, new_state = MODEL.apply(p, state, x, train=True)
            return jnp.mean(y**2), new_state

        (_, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = OPT.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state

    for i in range(STEP):  # on one device: XLA's CPU collectives over 8 emulated devices can stall
        params, state, opt_state = step(params, state, opt_state, jnp.asarray(X) + i)
    rng = {"threefry": jax.random.key(11), "rbg": jax.random.key(12, impl="rbg")}

    mesh = Mesh(np.array(jax.devices()), ("d",))

    def place(x: Any) -> Any:  # leading dims divisible by 8 split over the devices, the rest replicated
        spec = P("d") if x.ndim >= 1 and x.shape[0] % 8 == 0 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    params, opt_state = jax.tree.map(place, (params, opt_state))
    w = params["4"]["weight"]
    assert len(w.sharding.device_set) == 8 and w.addressable_shards[0].data.shape == (2, 288)

    jaxnets.save(out / "model.jnet", MODEL, params, state, opt_state=opt_state, optimizer=OPT)
    jaxnets.save_state_dict(out / "rng.jnet", {"rng": rng})
    with jaxnets.CheckpointManager(out / "ckpt") as mgr:
        mgr.save(STEP, params=params, state=state, opt_state=opt_state, rng=rng, model=MODEL,
                 optimizer=OPT, metrics={"loss": 0.5})
    y, _ = MODEL.apply(params, state, jnp.asarray(X))
    groups = {"params": params, "state": state, "opt_state": opt_state, "rng": rng}
    _dump("write", out, {**{f"file.{g}": v for g, v in groups.items()},
                         **{f"ckpt.{g}": v for g, v in groups.items()}}, y)


def read(out: Path) -> None:
    assert len(jax.devices()) == 1, jax.devices()
    loaded = jaxnets.load(out / "model.jnet", device="cpu")
    with jaxnets.open(out / "rng.jnet") as reader:
        rng = {k.split(".", 1)[1]: reader[k] for k in reader}
    ckpt = jaxnets.CheckpointManager(out / "ckpt").restore(device="cpu")
    assert ckpt.step == STEP and type(ckpt.model) is type(MODEL) and ckpt.model == MODEL
    assert loaded.model == MODEL and loaded.optimizer == OPT and ckpt.optimizer == OPT
    leaves = jax.tree.leaves((ckpt.params, ckpt.opt_state, loaded.params))
    assert all(x.devices() == {jax.devices("cpu")[0]} for x in leaves if isinstance(x, jax.Array))
    y, _ = ckpt.model.apply(ckpt.params, ckpt.state, jnp.asarray(X))
    y2, _ = loaded.model.apply(loaded.params, loaded.state, jnp.asarray(X))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y2))
    _dump("read", out, {
        "file.params": loaded.params, "file.state": loaded.state, "file.opt_state": loaded.opt_state,
        "file.rng": rng, "ckpt.params": ckpt.params, "ckpt.state": ckpt.state,
        "ckpt.opt_state": ckpt.opt_state, "ckpt.rng": ckpt.rng}, y)


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](Path(sys.argv[2]))
    print("ok", sys.argv[1])
