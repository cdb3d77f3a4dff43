"""Subprocess side of the checkpoint tests: ``python _script.py MODE DIR [...]``."""

from __future__ import annotations

import gc
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxnets.checkpoint import CheckpointManager  # noqa: E402
from jaxnets.errors import CheckpointError  # noqa: E402


def sharded_tree(mesh: jax.sharding.Mesh) -> dict:
    """Known values: big leaves sharded over the mesh's first axis, small ones replicated."""
    row = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return {
        "w": jax.device_put(np.arange(64 * 32, dtype=np.float32).reshape(64, 32), row),
        "v": jax.device_put(np.arange(16 * 8, dtype=np.int32).reshape(16, 8), row),
        "b": jax.device_put(np.ones(5, np.float32), rep),
    }


def main() -> None:
    mode, d = sys.argv[1], sys.argv[2]
    if mode == "first":  # 4 steps, save to DIR/run, exit; the same run goes on to DIR/straight
        import _training as t

        ts = t.train(t.start(), 0, 4)
        with CheckpointManager(os.path.join(d, "run")) as mgr:
            mgr.save(4, **ts, model=t.MODEL, extra={"next_batch": 4})
        ts = t.train(ts, 4, 10)  # 10 steps straight, never restored
        with CheckpointManager(os.path.join(d, "straight")) as mgr:
            mgr.save(10, **ts)
    elif mode == "resume":  # new process, no template: restore, 6 more steps, save
        import _training as t

        with CheckpointManager(os.path.join(d, "run")) as mgr:
            c = mgr.restore()
            assert c.model == t.MODEL
            ts = {"params": c.params, "state": c.state, "opt_state": c.opt_state, "rng": c.rng}
            ts = t.train(ts, c.extra["next_batch"], 10)
            mgr.save(10, **ts)
    elif mode == "shard8":  # save from 8 devices
        assert jax.device_count() == 8, jax.devices()
        mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
        tree = sharded_tree(mesh)
        assert len(tree["w"].sharding.device_set) == 8
        with CheckpointManager(d, group_below=int(sys.argv[3])) as mgr:
            mgr.save(1, params=tree)
    elif mode == "shard2":  # restore onto 2 devices under another sharding
        assert jax.device_count() == 2, jax.devices()
        mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(1, 2), ("a", "b"))
        cols = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "b"))

        def shard(key, info):
            return cols if len(info.shape) == 2 else None

        c = CheckpointManager(d).restore(sharding=shard)
        want = sharded_tree(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",)))
        for k, v in want.items():
            np.testing.assert_array_equal(np.asarray(c.params[k]), np.asarray(v))
        assert c.params["w"].sharding == cols and c.params["v"].sharding == cols
        assert c.params["w"].addressable_shards[0].data.shape == (64, 16)
        assert c.params["b"].sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])
        print("SHARD2 OK")
    elif mode == "crash":  # keep saving until killed; READY once a step is complete on disk
        mgr = CheckpointManager(d, max_to_keep=3)
        step = (mgr.latest_step() or 0) + 1
        big = {f"w{i}": jnp.full((1024, 2048), 0.0) for i in range(4)}  # 4 x 8 MiB
        small = {f"s{i}": jnp.zeros(7) for i in range(50)}
        ready = False
        while True:
            fill = float(step)
            tree = {
                "big": {k: v + fill for k, v in big.items()},
                "small": {k: v + fill for k, v in small.items()},
            }
            mgr.save(step, params=tree, extra={"fill": fill})
            if not ready:
                mgr.wait()  # this process's first save is complete on disk: now it may be killed
                print("READY", flush=True)
                ready = True
            step += 1
            time.sleep(0.001)
    elif mode == "exit-without-wait":  # the program ends right after an async save()
        mgr = CheckpointManager(d)
        big = {f"w{i}": jnp.full((1024, 1024), float(i)) for i in range(8)}  # 8 x 4 MiB
        mgr.save(1, params=big, extra={"done": True})
        print("SAVE RETURNED", flush=True)
    elif mode in ("fail-handled", "fail-unwaited"):
        # A background save fails (the directory became a file: fails even as root). Handled:
        # raised at wait() (a) or at the next save (b), caught, and the program ends normally.
        # Unwaited: the program ends before any call could raise it (c), and drops its manager.
        names = ("a", "b") if mode == "fail-handled" else ("c",)
        for name in names:
            sub = os.path.join(d, name)
            mgr = CheckpointManager(sub)
            mgr.save(0, params={"w": jnp.ones(3)})
            mgr.wait()
            shutil.rmtree(sub)
            with open(sub, "w") as f:
                f.write("not a directory")
            mgr.save(1, params={"w": jnp.ones(3)})  # returns: the failure is in the background
            if name == "a":
                try:
                    mgr.wait()
                    print("A: NO ERROR")
                except CheckpointError as e:
                    print(f"A: raised at wait: {e}")
            elif name == "b":
                time.sleep(2)
                try:
                    mgr.save(2, params={"w": jnp.ones(3)})
                    print("B: NO ERROR")
                except CheckpointError as e:
                    print(f"B: raised at next save: {e}")
            else:
                del mgr
                gc.collect()
        print("END", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
