"""Arrays at the edges: torch tensors to numpy and back, and casts that never change a value silently.

numpy has no bfloat16, float8 or float4; ``ml_dtypes`` (a jax dependency) has them all. A torch
tensor of such a dtype is moved through a same-width integer view, so its bits are carried
exactly, never through float32. Tensors that are not plain dense arrays (sparse, nested,
quantized, meta) or whose dtype numpy cannot hold are refused by name (:func:`torch_problem`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core.structure import dtype_name

__all__ = [
    "to_numpy",
    "to_torch",
    "torch_problem",
    "TORCH_ADVICE",
    "torch_dtype_name",
    "kind",
    "is_lossy",
    "cast_problem",
    "int_range_fits",
]

# torch dtypes numpy lacks, moved bit for bit through an integer view of the same width.
_VIEWED = {
    "bfloat16": "int16",
    "float8_e4m3fn": "uint8",
    "float8_e5m2": "uint8",
    "float8_e4m3fnuz": "uint8",
    "float8_e5m2fnuz": "uint8",
    "float8_e8m0fnu": "uint8",
}
# torch dtypes numpy has under the same name.
_NATIVE = {
    "float16", "float32", "float64", "complex64", "complex128", "bool",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
}  # fmt: skip
# torch's float4_e2m1fn_x2 holds two float4 values per element, the first in the low 4 bits
# (torch.testing's pack_uint4, as safetensors' F4); numpy sees one float4_e2m1fn per value.
_FLOAT4_PACKED = "float4_e2m1fn_x2"


# What to do about a tensor torch_problem refuses (said once, wherever it is refused).
TORCH_ADVICE = (
    "jaxnets reads dense arrays of the dtypes numpy and ml_dtypes have: save a dense copy "
    "instead (t.to_dense(), t.dequantize(), t.to(torch.complex64), a nested tensor's components)"
)


def torch_problem(t: Any) -> str | None:
    """Why a torch tensor cannot be read as a dense array, or None when it can.

    Returns:
      e.g. ``"a sparse tensor (torch.sparse_coo)"``, ``"a quantized tensor (torch.qint8)"``,
      ``"of dtype torch.complex32, which numpy and jax cannot hold"``.
    """
    import torch

    if t.is_nested:
        return "a nested tensor"
    if t.layout != torch.strided:
        return f"a sparse tensor ({t.layout})"
    if t.is_quantized:
        return f"a quantized tensor ({t.dtype})"
    if t.device.type == "meta":
        return "a meta tensor (it has no data)"
    name = dtype_name(t.dtype)
    if name not in _NATIVE and name not in _VIEWED and name != _FLOAT4_PACKED:
        return f"of dtype {t.dtype}, which numpy and jax cannot hold"
    return None


def to_numpy(value: Any) -> Any:
    """A state_dict value as a numpy array (torch tensors included, bfloat16/float8 exactly).

    Typed PRNG key arrays stay jax arrays: numpy has no dtype for them. A torch tensor's array
    may share its memory: the caller copies when the tensor is not its own.

    Raises:
      ValueError: a torch tensor that :func:`torch_problem` refuses.
      TypeError: a value that is no array (a ``jax.ShapeDtypeStruct``, an arbitrary object):
        numpy would silently make a 0-d object array of it.
    """
    if isinstance(value, jax.Array):
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            return value
        return np.asarray(value)
    if type(value).__module__.startswith("torch"):
        problem = torch_problem(value)
        if problem is not None:
            raise ValueError(f"cannot read a torch tensor that is {problem}.")
        import torch

        t = value.detach().cpu()
        name = dtype_name(t.dtype)
        if name in _VIEWED:
            bits = t.contiguous().view(getattr(torch, _VIEWED[name])).numpy()
            return bits.view(jnp.dtype(name))
        if name == _FLOAT4_PACKED:
            packed = t.contiguous().view(torch.uint8).numpy()
            pairs = np.stack([packed & 0x0F, packed >> 4], axis=-1)
            shape = (*packed.shape[:-1], 2 * packed.shape[-1]) if packed.ndim else (2,)
            return pairs.reshape(shape).view(jnp.dtype("float4_e2m1fn"))
        return t.numpy()
    arr = np.asarray(value)
    if arr.dtype == object:  # an abstract value (jax.ShapeDtypeStruct), a tracer, a dict...
        raise TypeError(
            f"a state_dict value must be an array (numpy, jax or torch) or a number, got "
            f"{type(value).__name__}: {value!r:.80}. For shapes without values, "
            "use jax.eval_shape and jaxnets.flatten, or jaxnets.check_state_dict."
        )
    return arr


def torch_dtype_name(dtype: Any) -> str | None:
    """The torch dtype that holds numpy ``dtype`` exactly (``"float8_e4m3fn"``), or None."""
    name = dtype_name(dtype)
    if name in _NATIVE or name in _VIEWED:
        return name
    if name == "float4_e2m1fn":
        return _FLOAT4_PACKED
    return None


def to_torch(value: Any) -> Any:
    """A numpy array as a new torch tensor of the same dtype, bit for bit.

    float4 values are packed in pairs into ``torch.float4_e2m1fn_x2`` (the last dim halves).

    Raises:
      ValueError: torch has no such dtype (int4, float6, ...), or float4 with an odd last dim.
    """
    import torch

    arr = np.asarray(value)
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would make a scalar 1-D)
        arr = arr.copy(order="C")
    name = dtype_name(arr.dtype)
    target = torch_dtype_name(arr.dtype)
    if target is None:
        raise ValueError(f"dtype {name} has no PyTorch equivalent.")
    if name in _VIEWED:
        bits = arr.view(np.dtype(_VIEWED[name]))
        return torch.from_numpy(bits.copy()).view(getattr(torch, name))
    if target == _FLOAT4_PACKED:
        if arr.ndim == 0 or arr.shape[-1] % 2:
            raise ValueError(
                f"float4 of shape {arr.shape}: torch packs float4 in pairs along the last dim, "
                "which must be even."
            )
        nibbles = arr.view(np.uint8) & 0x0F
        packed = nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)
        return torch.from_numpy(np.ascontiguousarray(packed)).view(torch.float4_e2m1fn_x2)
    return torch.from_numpy(arr.copy())


@functools.lru_cache(maxsize=256)
def kind(dtype: Any) -> str:
    """``"b"`` bool, ``"i"`` signed, ``"u"`` unsigned, ``"f"`` float, ``"c"`` complex, ``"k"`` PRNG key.

    Unlike ``np.dtype.kind`` this knows ml_dtypes' types (bfloat16 is ``"f"``, int4 ``"i"``).
    """
    if isinstance(dtype, str) and dtype.startswith("key<"):
        return "k"
    d = jnp.dtype(dtype)
    if jax.dtypes.issubdtype(d, jax.dtypes.prng_key):
        return "k"
    for k, t in (("b", jnp.bool_), ("u", jnp.unsignedinteger), ("i", jnp.signedinteger),
                 ("f", jnp.floating), ("c", jnp.complexfloating)):
        if jnp.issubdtype(d, t):
            return k
    return "?"


def _finfo(dtype: Any) -> Any:
    return jnp.finfo(jnp.dtype(dtype))


@functools.lru_cache(maxsize=1024)
def is_lossy(src: Any, dst: Any) -> bool:
    """Whether casting ``src`` to ``dst`` can round or clip values (PyTorch's ``copy_`` does so silently)."""
    s, d = kind(src), kind(dst)
    if s == d and s in "fc":
        fs, fd = _finfo(src), _finfo(dst)
        return bool(fd.nmant < fs.nmant or fd.max < fs.max or fd.tiny > fs.tiny)
    if s in "iu" and d in "fc":  # big integers round in a narrow float: int32 into float32
        return jnp.iinfo(jnp.dtype(src)).bits - (s == "i") > _finfo(dst).nmant + 1
    return (s, d) in {("f", "i"), ("f", "u"), ("f", "b"), ("c", "f"), ("c", "i"), ("c", "u"),
                      ("c", "b"), ("i", "b"), ("u", "b")}


@functools.lru_cache(maxsize=1024)
def int_range_fits(src: Any, dst: Any) -> bool:
    """Whether integer (or bool) dtype ``dst`` holds every value of integer dtype ``src``."""
    si, di = jnp.iinfo(jnp.dtype(src)), jnp.iinfo(jnp.dtype(dst))
    return bool(si.min >= di.min and si.max <= di.max)


def cast_problem(value: Any, src: Any, dst: Any) -> str | None:
    """Why casting ``value`` (of dtype ``src``) to integer dtype ``dst`` would wrap around, or None.

    PyTorch's ``copy_`` wraps an out-of-range integer (and makes a NaN an arbitrary integer)
    silently; jaxnets refuses. Data is read only when ``dst`` cannot hold every ``src`` value.

    Returns:
      e.g. ``"values from -1 to 3000000000 do not fit int32 (-2147483648 to 2147483647)"``.
    """
    s, d = kind(src), kind(dst)
    if d not in "iu" or s not in "iuf":
        return None
    if s in "iu" and int_range_fits(src, dst):
        return None
    di = jnp.iinfo(jnp.dtype(dst))
    arr = np.asarray(value)
    if arr.size == 0:
        return None
    if s == "f":
        wide = arr.astype(np.float64)
        if not np.isfinite(wide).all():
            return f"NaN or infinite values, which {dtype_name(dst)} cannot hold"
        lo, hi = math.trunc(float(wide.min())), math.trunc(float(wide.max()))
    else:
        lo, hi = int(arr.min()), int(arr.max())
    if lo < int(di.min) or hi > int(di.max):
        if lo == hi:
            return f"value {lo} does not fit {dtype_name(dst)} ({int(di.min)} to {int(di.max)})"
        return f"values from {lo} to {hi} do not fit {dtype_name(dst)} ({int(di.min)} to {int(di.max)})"
    return None
