"""A jaxnets checkpoint directory as a CLI source: steps, metrics and each step's tree.

Everything :func:`CheckpointSource.describe` prints comes from the JSON item ``meta`` that
:class:`jaxnets.CheckpointManager` stores with each step, read and checked by
:func:`jaxnets.checkpoint.meta.read_meta` as the manager reads it; no array data is read, and no
manager is opened: opening one cleans up the temporary directories of in-progress saves, which
would hurt a training run writing to the directory being inspected.
Reading tensors (for ``diff`` and ``convert``) restores one step onto the CPU through the manager.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxnets.checkpoint.meta import META, read_meta
from jaxnets.core.structure import LeafInfo
from jaxnets.core.tree import split_key
from jaxnets.errors import CheckpointError
from jaxnets.io.sources import Source

__all__ = ["CheckpointSource"]

_MODEL_FIELDS = ("params", "state")


def _is_step_dir(p: Path) -> bool:
    return p.name.isdigit() and (p / META).is_dir()


class CheckpointSource(Source):
    """A checkpoint directory (or one of its step directories) at one step (default: the latest).

    As a source its entries are the model's params and buffers under their state_dict keys
    (``0.weight``, ``1.running_mean``), so it compares with model files; :meth:`groups` adds the
    optimizer state and RNG.
    """

    kind = "jaxnets checkpoint"

    def __init__(self, path: str | os.PathLike[str], step: int | None = None):
        p = Path(path)
        if _is_step_dir(p):  # ckpt/12 means step 12 of ckpt
            p, step = p.parent, int(p.name)
        super().__init__(p)
        # Complete steps only: orbax writes "<step>.orbax-checkpoint-tmp-*" and renames when done.
        steps = sorted(int(c.name) for c in p.iterdir() if _is_step_dir(c))
        if not steps:
            raise CheckpointError(f"{p}: not a checkpoint directory (no complete step directories in it).",
                                  file=str(p))
        self.steps = steps
        self.step = steps[-1] if step is None else int(step)
        if self.step not in steps:
            raise CheckpointError(f"{p}: no step {self.step}; saved steps: {steps}.", file=str(p))
        self._metas: dict[int, dict[str, Any]] = {}
        self._meta = self._read_meta(self.step)
        self._arrays: dict[str, Any] | None = None

    def _read_meta(self, step: int) -> dict[str, Any]:
        if step not in self._metas:
            # The one reader: every field checked, and the metadata's own checksum.
            self._metas[step] = read_meta(Path(self.path) / str(step))
        return self._metas[step]

    # --- what describe() prints ----------------------------------------------------------------
    def describe(self, step: int | None) -> CheckpointSource:
        """Prints the steps and their metrics; returns the source at ``step`` (default: latest)."""
        if step is not None and step != self.step:
            if int(step) not in self.steps:
                raise CheckpointError(f"{self.path}: no step {step}; saved steps: {self.steps}.", file=self.path)
            self._meta = self._read_meta(int(step))
            self.step, self._arrays = int(step), None
        rows = []
        names: list[str] = []
        for s in self.steps:
            m = self._read_meta(s).get("metrics") or {}
            names += [n for n in m if n not in names]
            rows.append((s, m))
        print(f"\nsteps: {len(self.steps)} (latest {self.steps[-1]}); showing step {self.step}")
        head = "  " + f"{'step':>8}" + "".join(f"  {n:>14}" for n in names)
        print(head)
        for s, m in rows:
            cells = "".join(f"  {m[n]:>14.6g}" if n in m else f"  {'-':>14}" for n in names)
            mark = "  <- shown" if s == self.step else ""
            print(f"  {s:>8}{cells}{mark}")
        return self

    def _field_infos(self) -> dict[str, dict[str, LeafInfo]]:
        out: dict[str, dict[str, LeafInfo]] = {}
        for k, e in self._meta["leaves"].items():
            parts = split_key(k)
            field, rest = parts[0], k[len(parts[0]) + 1 :]
            out.setdefault(field, {})[rest] = LeafInfo(tuple(e["shape"]), e["dtype"])
        return out

    def groups(self) -> dict[str, dict[str, LeafInfo]]:
        f = self._field_infos()
        return {
            "params": f.get("params", {}),
            "state (buffers)": f.get("state", {}),
            "opt_state": f.get("opt_state", {}),
            "rng": f.get("rng", {}),
        }

    def infos(self) -> dict[str, LeafInfo]:
        f = self._field_infos()
        return {**f.get("params", {}), **f.get("state", {})}

    @property
    def config(self) -> Any:
        return self._meta.get("model")

    @property
    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step}
        for name in ("optimizer", "metrics", "extra"):
            if self._meta.get(name) is not None:
                out[name] = self._meta[name]
        return out

    # --- tensors (diff, convert) ---------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        if self._arrays is None:
            import jaxnets

            with jaxnets.CheckpointManager(self.path, async_save=False) as mgr:
                ckpt = mgr.restore(self.step, device="cpu")
            self._arrays = jaxnets.state_dict(ckpt.params, ckpt.state)
        return np.asarray(self._arrays[key])

    def close(self) -> None:
        self._arrays = None
