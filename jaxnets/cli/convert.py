"""``jaxnets convert SRC DST``: tensors between jaxnets files, safetensors and PyTorch state_dicts.

The output format follows DST's suffix: ``.safetensors``, ``.pt``/``.pth`` (a ``torch.save``-d
dict of tensors, loadable with ``torch.load(weights_only=True)``), anything else a jaxnets
state_dict file. Every dtype is carried bit for bit; bfloat16 moves through ``ml_dtypes`` on the
numpy side and a 16-bit view on the torch side, never through float32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxnets.cli.inspect import format_bytes
from jaxnets.cli.sources import ORDER_KEY, kind_of, open_source
from jaxnets.errors import FileFormatError, JaxnetsError

__all__ = ["convert", "to_torch"]


def to_torch(value: np.ndarray) -> Any:
    """A numpy array as a torch tensor of the same dtype, bfloat16 included (bit for bit)."""
    import torch

    arr = np.require(value, requirements="C")
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    if arr.dtype.kind not in "biufc":
        raise JaxnetsError(f"dtype {arr.dtype.name} has no PyTorch equivalent the converter supports.")
    return torch.from_numpy(arr.copy())


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, force: bool = False) -> int:
    """Writes the tensors of ``src`` to ``dst`` in the format DST's suffix names. Returns 0.

    Raises:
      FileNotFoundError: ``src`` does not exist.
      FileExistsError: ``dst`` exists and ``force`` is False.
      JaxnetsError: ``src`` is unreadable, or ``dst`` names a checkpoint directory.
    """
    dst_path = Path(dst)
    if dst_path.exists() and not force:
        raise FileExistsError(17, "already exists; pass --force to overwrite", str(dst_path))
    kind = kind_of(dst_path) if not dst_path.is_dir() else "checkpoint"
    if kind == "checkpoint":
        raise JaxnetsError(f"{dst}: convert writes files, not checkpoint directories.", file=os.fspath(dst))
    source = open_source(src)
    try:
        keys = [k for k, i in source.infos().items() if i.dtype.startswith("key<")]
        if keys and kind != "jaxnets":
            raise JaxnetsError(
                f"{src}: {keys[0]!r} is a typed PRNG key array ({len(keys)} in all), which {kind} files "
                "cannot hold; convert to a jaxnets file instead, or drop the keys first.",
                file=os.fspath(src), path=keys[0],
            )
        flat = {k: source.value(k) for k in source.keys()}
        if not flat:
            raise FileFormatError(f"{src}: holds no tensors to convert.", file=os.fspath(src))
        if kind == "safetensors":
            import safetensors.numpy

            safetensors.numpy.save_file({k: np.require(v, requirements="C") for k, v in flat.items()}, os.fspath(dst_path),
                                        metadata={"format": "pt", ORDER_KEY: json.dumps(list(flat))})
        elif kind == "torch":
            try:
                import torch
            except ImportError as e:
                raise JaxnetsError("writing PyTorch files needs torch; pip install torch.") from e
            torch.save({k: to_torch(v) for k, v in flat.items()}, os.fspath(dst_path))
        else:
            from jaxnets.io import save_state_dict

            save_state_dict(dst_path, flat)
        dropped = " (architecture config dropped: the target format holds tensors only)" if (
            source.config is not None and kind != "jaxnets") else ""
        total = sum(int(getattr(v, "nbytes", 0)) for v in flat.values())
        print(f"{src} ({source.kind}) -> {dst} ({kind}): {len(flat)} tensors, {format_bytes(total)}{dropped}")
    finally:
        source.close()
    return 0
