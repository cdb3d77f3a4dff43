"""``jaxnets convert SRC DST``: tensors between jaxnets files, safetensors and PyTorch state_dicts.

The output format follows DST's suffix: ``.safetensors``, ``.pt``/``.pth``/``.bin`` (a
``torch.save``-d dict of tensors, loadable with ``torch.load(weights_only=True)``), anything else
a jaxnets state_dict file. Every dtype is carried bit for bit (bfloat16, float8 and float4
through ml_dtypes on the numpy side and an integer view on the torch side, never through
float32); an entry the target format cannot hold (int4 or complex128 in safetensors, a PRNG key
outside jaxnets files) is an error naming it, before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jaxnets.cli.inspect import format_bytes, nbytes
from jaxnets.cli.sources import open_source
from jaxnets.core.arrays import to_torch, torch_dtype_name
from jaxnets.core.progress import check_progress
from jaxnets.core.progress import progress as progress_bar
from jaxnets.errors import FileFormatError, JaxnetsError
from jaxnets.io import _atomic, safetensors_format
from jaxnets.io.sources import kind_of

__all__ = ["convert"]


def _save_torch(path: Path, flat: dict[str, Any]) -> None:
    try:
        import torch
    except ImportError as e:
        raise JaxnetsError("writing PyTorch files needs torch; pip install torch.") from e
    bad: list[tuple[str, str]] = []  # (key, what is wrong)
    for k, v in flat.items():
        name = torch_dtype_name(v.dtype)
        if name is None:
            bad.append((k, f"{k!r} ({v.dtype})"))
        elif name == "float4_e2m1fn_x2" and (v.ndim == 0 or v.shape[-1] % 2):
            bad.append((k, f"{k!r} (float4 with an odd last dim {v.shape[-1:]})"))
    if bad:
        texts = [t for _, t in bad]
        raise JaxnetsError(
            f"{path}: PyTorch has no dtype for {texts[0]}" + (f" (nor {', '.join(texts[1:])})" if len(texts) > 1 else "")
            + "; cast the entry, or write a jaxnets file.",
            file=str(path), path=bad[0][0],
        )
    tensors = {k: to_torch(v) for k, v in flat.items()}
    _atomic.replace_with(str(path), lambda f: torch.save(tensors, f))


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: bool | None = None,
) -> int:
    """Writes the tensors of ``src`` to ``dst`` in the format DST's suffix names. Returns 0.

    ``progress`` (None: for 1 GiB or more on a terminal; True; False) shows a bar counted in bytes
    while SRC is read and while DST is written.

    Raises:
      FileNotFoundError: ``src`` does not exist.
      FileExistsError: ``dst`` exists and ``force`` is False.
      JaxnetsError: ``src`` is unreadable, ``dst`` names a directory, or an entry's dtype has
        no equivalent in DST's format (naming the key and the dtype).
    """
    dst_path = Path(dst)
    if dst_path.is_dir():
        raise JaxnetsError(f"{dst}: convert writes files, not directories.", file=os.fspath(dst))
    if dst_path.exists() and not force:
        raise FileExistsError(17, "already exists; pass --force to overwrite", str(dst_path))
    kind = kind_of(dst_path)
    if dst_path.name.lower().endswith(".index.json"):
        raise JaxnetsError(f"{dst}: convert writes one file, not a sharded folder.", file=os.fspath(dst))
    check_progress(progress)
    source = open_source(src)
    try:
        infos = source.infos()
        keys = [k for k, i in infos.items() if i.dtype.startswith("key<")]
        if keys and kind != "jaxnets":
            raise JaxnetsError(
                f"{src}: {keys[0]!r} is a typed PRNG key array ({len(keys)} in all), which {kind} files "
                "cannot hold; convert to a jaxnets file instead, or drop the keys first.",
                file=os.fspath(src), path=keys[0],
            )
        sizes = {k: nbytes(i) for k, i in infos.items()}
        total = sum(sizes.values())
        flat = {}
        with progress_bar(total, f"reading {src}", progress) as bar:
            for k in source:
                flat[k] = source[k]
                bar.update(sizes.get(k, 0))
        if not flat:
            raise FileFormatError(f"{src}: holds no tensors to convert.", file=os.fspath(src))
        if kind == "jaxnets":
            from jaxnets.io import save_state_dict

            save_state_dict(dst_path, flat, progress=progress)  # its own bar, tensor by tensor
        else:
            with progress_bar(total, f"writing {dst}", progress) as bar:
                if kind == "safetensors":
                    safetensors_format.write(dst_path, flat, {"format": "pt"})
                else:
                    _save_torch(dst_path, flat)
                bar.complete()
        dropped = " (architecture config dropped: the target format holds tensors only)" if (
            source.config is not None and kind != "jaxnets") else ""
        total = sum(int(getattr(v, "nbytes", 0)) for v in flat.values())
        print(f"{src} ({source.kind}) -> {dst} ({kind}): {len(flat)} tensors, {format_bytes(total)}{dropped}")
    finally:
        source.close()
    return 0
