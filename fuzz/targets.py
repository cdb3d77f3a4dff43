"""Fuzz targets: what jaxnets must survive, and the oracle each input is judged by.

Every target takes the raw bytes of one input and runs one user-facing path on them. The oracle
is the project's promise: bad input raises a ``jaxnets`` error (the CLI: exit status 1 or 2 with
a one-line message), and a load that succeeds returns exactly what was saved. Anything else --
another exception type, a hang, different numbers -- is a finding.

``fuzz/run.py`` drives these under atheris (coverage-guided; ``make fuzz``), and
``tests/test_fuzz_regressions.py`` replays every input that ever failed, kept under
``tests/fuzz_regressions/<target>/``, in ``make test``. No atheris is needed for the replay.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TARGETS", "seeds", "Workdir"]

SUFFIXES = (".jnet", ".safetensors", ".pt")


class Workdir:
    """A private scratch folder for one fuzzing process, with the pristine files targets need."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="jaxnets-fuzz-"))
        self._ckpt: tuple[Path, dict[str, np.ndarray]] | None = None

    def file(self, data: bytes, suffix: str) -> Path:
        path = self.root / f"input{suffix}"
        path.write_bytes(data)
        return path

    def checkpoint(self) -> tuple[Path, dict[str, np.ndarray]]:
        """A pristine one-step checkpoint (packed and single leaves, opt_state, a typed key)."""
        if self._ckpt is None:
            import jax

            import jaxnets

            model, params, state, opt, opt_state = _training_state()
            pristine = self.root / "pristine"
            with jaxnets.CheckpointManager(pristine, async_save=False, group_below=4096) as mgr:
                mgr.save(3, params=params, state=state, opt_state=opt_state,
                         rng=jax.random.key(5), model=model, optimizer=opt, metrics={"loss": 0.5})  # fmt: skip
            expected = _flat_values({"params": params, "state": state, "opt_state": opt_state,
                                     "rng": jax.random.key(5)})  # fmt: skip
            self._ckpt = (pristine, expected)
        return self._ckpt

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _training_state() -> tuple[Any, Any, Any, Any, Any]:
    import jax

    from jaxnets import nn, optim

    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10)
    )
    params, state = model.init(jax.random.key(0))
    opt = optim.adam(1e-3)
    return model, params, state, opt, opt.init(params)


def _flat_values(tree: Any) -> dict[str, np.ndarray]:
    import jax

    import jaxnets

    out = {}
    for k, v in jaxnets.flatten(tree).items():
        if isinstance(v, jax.Array) and jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key):
            v = jax.random.key_data(v)
        out[k] = np.asarray(v)
    return out


def _same(got: Any, expected: dict[str, np.ndarray], what: str) -> None:
    flat = _flat_values(got)
    if flat.keys() != expected.keys():
        raise AssertionError(f"{what}: restored keys differ from the saved ones")
    for k, v in expected.items():
        if flat[k].dtype != v.dtype or flat[k].shape != v.shape or flat[k].tobytes() != v.tobytes():
            raise AssertionError(f"{what}: {k} restored different bits than were saved")


class _Provider:
    """Reads choices from the front of an input (as atheris' FuzzedDataProvider does), so the
    same bytes replay identically without atheris."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def int(self, n: int) -> int:
        """A number in ``[0, n)`` from the next 4 bytes (0 when the input is exhausted)."""
        if n <= 1:
            return 0
        chunk = self._data[self._pos : self._pos + 4]
        self._pos += 4
        return int.from_bytes(chunk.ljust(4, b"\0"), "little") % n

    def rest(self) -> bytes:
        out, self._pos = self._data[self._pos :], len(self._data)
        return out


# --- targets --------------------------------------------------------------------------------------
def model_load(data: bytes, work: Workdir) -> None:
    """``jaxnets.load`` of a model file."""
    import jaxnets

    with contextlib.suppress(jaxnets.JaxnetsError):
        jaxnets.load(work.file(data, ".jnet"))


def reader(data: bytes, work: Workdir) -> None:
    """``jaxnets.open`` and every lazy read: keys, infos, each tensor, its mmap, read_all."""
    import jaxnets

    with contextlib.suppress(jaxnets.JaxnetsError):
        with jaxnets.open(work.file(data, ".jnet")) as r:
            _ = (r.kind, r.provenance, r.model_config, r.infos(), r.infos("opt_state"))
            for key in list(r.keys()):
                with contextlib.suppress(jaxnets.JaxnetsError):
                    r[key]
                with contextlib.suppress(jaxnets.JaxnetsError):
                    r.mmap(key)
            r.read_all()


def load_state_dict(data: bytes, work: Workdir) -> None:
    """``jaxnets.load_state_dict(model, path)`` of a .jnet, .safetensors or .pt file (first byte)."""
    import warnings

    import jaxnets

    if not data:
        return
    suffix = SUFFIXES[data[0] % len(SUFFIXES)]
    model = _training_state()[0]
    with contextlib.suppress(jaxnets.JaxnetsError), warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxnets.JaxnetsWarning)
        jaxnets.load_state_dict(model, work.file(data[1:], suffix), strict=False)


def checkpoint_restore(data: bytes, work: Workdir) -> None:
    """``CheckpointManager.restore`` of a step with one file of it replaced or bit-flipped.

    The oracle is strict: restore raises a CheckpointError (or another jaxnets error), or returns
    exactly the saved values.
    """
    import jaxnets

    pristine, expected = work.checkpoint()
    step_dir = work.root / "ckpt"
    shutil.rmtree(step_dir, ignore_errors=True)
    shutil.copytree(pristine, step_dir)
    files = sorted(p for p in (step_dir / "3").rglob("*") if p.is_file())
    fdp = _Provider(data)
    target = files[fdp.int(len(files))]
    blob = bytearray(target.read_bytes())
    mode = fdp.int(3)
    if mode == 0:  # replace the whole file
        blob = bytearray(fdp.rest())
    elif mode == 1 and blob:  # flip bits
        for _ in range(1 + fdp.int(8)):
            blob[fdp.int(len(blob))] ^= 1 << fdp.int(8)
    else:  # truncate
        del blob[fdp.int(len(blob) + 1) :]
    target.write_bytes(bytes(blob))
    try:
        with jaxnets.CheckpointManager(step_dir, async_save=False) as mgr:
            ckpt = mgr.restore(3)
    except jaxnets.JaxnetsError:
        return
    _same({"params": ckpt.params, "state": ckpt.state, "opt_state": ckpt.opt_state, "rng": ckpt.rng},
          expected, f"{target.relative_to(step_dir)} (mode {mode})")  # fmt: skip


def cli(data: bytes, work: Workdir) -> None:
    """``jaxnets inspect``, ``diff`` and ``convert`` on a file of each format (first byte)."""
    from jaxnets.cli import main

    if not data:
        return
    suffix = SUFFIXES[data[0] % len(SUFFIXES)]
    path = str(work.file(data[1:], suffix))
    other = str(work.root / ("out" + SUFFIXES[(data[0] + 1) % len(SUFFIXES)]))
    sink = io.StringIO()
    for argv in (["inspect", path], ["diff", path, path], ["convert", path, other, "--force"]):
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            status = main(argv)
        if status not in (0, 1, 2):
            raise AssertionError(f"jaxnets {argv[0]} exited with status {status}")
        sink.seek(0)
        sink.truncate()


TARGETS: dict[str, Callable[[bytes, Workdir], None]] = {
    "model_load": model_load,
    "reader": reader,
    "load_state_dict": load_state_dict,
    "checkpoint_restore": checkpoint_restore,
    "cli": cli,
}


# --- seed corpus ----------------------------------------------------------------------------------
def seeds(target: str, work: Workdir) -> list[bytes]:
    """Valid inputs for ``target``: the files a user would really have."""
    import jax
    import jax.numpy as jnp

    import jaxnets

    model, params, state, opt, opt_state = _training_state()
    folder = work.root / "seeds"
    folder.mkdir(exist_ok=True)
    full = folder / "full.jnet"
    jaxnets.save(full, model, params, state, opt_state=opt_state, optimizer=opt,
                 metadata={"mean": np.arange(3.0), "note": "seed"})  # fmt: skip
    odd = folder / "odd.jnet"
    jaxnets.save_state_dict(odd, {
        "bf16": jnp.ones((3, 5), jnp.bfloat16), "int4": jnp.arange(8, dtype=jnp.int4),
        "scalar": np.float64(2.5), "empty": np.zeros((0, 3), np.float32),
        "key": jax.random.key(1), "keys": jax.random.split(jax.random.key(2), 3),
    })  # fmt: skip
    jnet = [full.read_bytes(), odd.read_bytes()]
    if target in ("model_load", "reader"):
        return jnet
    if target == "checkpoint_restore":
        # (file index, mode, then the mode's choices), as checkpoint_restore reads them
        return [
            i.to_bytes(4, "little") + m.to_bytes(4, "little") + bytes(8)
            for i in range(16)
            for m in range(3)
        ]
    foreign = _foreign_seeds(folder, jaxnets.state_dict(params, state, model=model))
    return [bytes([0]) + b for b in jnet] + [bytes([1]) + foreign[0], bytes([2]) + foreign[1]]


def _foreign_seeds(folder: Path, sd: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    import torch
    from safetensors.numpy import save_file

    st = folder / "sd.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(st))
    pt = folder / "sd.pt"
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, pt)
    return st.read_bytes(), pt.read_bytes()


def replay(target: str, data: bytes) -> None:
    """Runs one input through ``target`` in a fresh scratch folder (for regression tests)."""
    work = Workdir()
    try:
        cwd = os.getcwd()
        TARGETS[target](data, work)
    finally:
        os.chdir(cwd)
        work.close()
