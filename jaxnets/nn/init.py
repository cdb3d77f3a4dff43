"""PyTorch's default initialisers, so fresh jaxnets layers match fresh torch layers in distribution.

Each function takes a PRNG key, a shape and a dtype and returns an array; fans follow
``torch.nn.init._calculate_fan_in_and_fan_out`` (dim 1 is fan-in, dim 0 fan-out, times the
receptive field). :func:`from_spec` turns a JSON-able name such as ``"normal(std=0.02)"`` into an
initialiser (used by ``nn.Parameter`` and ``nn.Buffer``).

Fast, reproducible draws (design note). A cold ``model.init`` used to spend nearly all its time
compiling: ``jax.random.uniform`` and ``split`` compile one XLA program per distinct shape, and
ResNet-18 has 13 weight shapes (17 s on 2 cores). Here :func:`split` and every float32 draw with a
threefry key use jax's default threefry scheme (``jax_threefry_partitionable``, on since jax 0.5),
in which value ``i`` of a draw depends only on the key and the counter ``i``: so eagerly a draw of
any shape is one threefry program of ``_BLOCK`` counters run over the blocks of the draw, plus
one small program per kind of draw that turns the bits into floats, the blocks being joined on
the host. Three compiled programs serve every shape. Under a trace (``jit``, ``eval_shape``,
``vmap``) the same expressions run as one computation of the whole draw.

What a key means: :func:`split` gives ``jax.random.split``'s keys; :func:`uniform` (every torch
default init) gives ``(2u - 1) * bound``, where ``u`` is jax.random.uniform's ``[0, 1)`` value of
the same key and counter: exact but for one rounding, so the same on every IEEE machine, and
equal to ``jax.random.uniform(key, shape, minval=-bound, maxval=bound)`` on CPUs with fused
multiply-add (all x86-64 since 2013, all arm64); ``normal(std=1)`` is ``jax.random.normal``.
``model.init(key)`` and ``jax.jit(model.init)(key)`` give the same values, bit for bit
(tests/nn/test_init.py), whatever jax's partitionable flag says. Draws whose float steps are
not exact (``normal``, ``trunc_normal``, ``uniform(a, b)``) are the same eager and under jit
on one backend, and can differ in the last bit between backends that fuse multiply-adds
differently, as jax.random's own do. Keys of other implementations (``rbg``) and non-float32
dtypes go through ``jax.random`` unchanged.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import threefry2x32_p

__all__ = [
    "split",
    "fans",
    "uniform",
    "torch_default",
    "weight_and_bias",
    "xavier_uniform",
    "normal",
    "trunc_normal",
    "from_spec",
    "INITIALIZERS",
]

Initializer = Callable[[jax.Array, Sequence[int], str], jax.Array]
"""``init(key, shape, dtype) -> array``: what :func:`from_spec` returns."""

# Counters per run of the eager path's one threefry program: a draw of n values runs it
# ceil(n / _BLOCK) times; small draws and splits waste under a millisecond of work on a CPU.
_BLOCK = 1 << 16


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape``, as PyTorch computes them."""
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need at least 2 dimensions, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


# --- the draws ---------------------------------------------------------------------------------
def _threefry_data(key: Any) -> Any:
    """The ``(2,)`` uint32 data of a threefry key (typed or raw), or None for any other key."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if "threefry2x32" not in str(jax.random.key_impl(key)) or key.shape != ():
            return None
        return jax.random.key_data(key)
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return key if "threefry" in str(getattr(jax.config, "jax_default_prng_impl", "threefry")) else None
    return None


def _unit(bits: jax.Array) -> jax.Array:
    """float32 in ``[0, 1)`` from uint32 bits, exactly (23 random mantissa bits), as jax does."""
    f = lax.bitwise_or(lax.shift_right_logical(bits, np.uint32(32 - 23)), np.float32(1.0).view(np.uint32))
    return lax.bitcast_convert_type(f, jnp.float32) - np.float32(1.0)


def _between(u: jax.Array, lo: Any, hi: Any) -> jax.Array:
    """jax.random.uniform's ``[lo, hi)`` from ``u`` in ``[0, 1)`` (its exact expressions)."""
    return lax.max(lo, u * (hi - lo) + lo)


_SQRT2 = np.float32(np.sqrt(2))
_NEXT_M1 = np.nextafter(np.float32(-1.0), np.float32(0.0))


def _transform(kind: str, scaled: bool, bits: jax.Array, p: tuple[Any, ...]) -> jax.Array:
    """float32 values from uint32 bits and the float32 scalars ``p`` of the kind of draw.

    * ``symmetric``, ``p = (b,)``: U(-b, b) as ``(2u - 1) * b``. ``2u - 1`` is exact and the
      product is rounded once, so the value does not depend on whether a backend fuses
      multiply-adds (it is the value jax.random.uniform gives where ``u * 2b - b`` is fused).
    * ``uniform``, ``p = (lo, hi)``: U(lo, hi), jax.random.uniform's expressions.
    * ``normal``, ``p = (mean, std)``: ``z = sqrt(2) * erfinv(u)`` as jax.random.normal, then
      ``z * std + mean`` if ``scaled``.
    * ``trunc_normal``, ``p = (erf(a/sqrt2), erf(b/sqrt2), above a, below b, mean, std)``: ``z``
      from ``u`` between the first two, cut to the next two, then scaled.

    Every transcendental of a scalar is computed by the caller on the host: under jit the scalars
    are constants, and XLA folds constants with other code than it compiles.
    """
    u = _unit(bits)
    if kind == "symmetric":
        return (u * np.float32(2.0) - np.float32(1.0)) * p[0]
    if kind == "uniform":
        return _between(u, p[0], p[1])
    if kind == "normal":
        z = _SQRT2 * lax.erf_inv(_between(u, jnp.float32(_NEXT_M1), jnp.float32(1.0)))
    elif kind == "trunc_normal":
        z = jnp.clip(_SQRT2 * lax.erf_inv(_between(u, p[0], p[1])), p[2], p[3])
    else:
        raise ValueError(f"unknown kind of draw {kind!r}")
    return z * p[-1] + p[-2] if scaled else z


def _words(kd: jax.Array, hi: Any, start: Any, size: int) -> tuple[jax.Array, jax.Array]:
    """Threefry of the 64-bit counters ``hi * 2**32 + start + i``, ``i < size``: two uint32
    words each (jax's partitionable threefry: split keys are the word pairs, bits their xor).

    ``start + size`` must not pass a multiple of 2**32 (blocks of the eager path never do).
    """
    counters = lax.iota(np.uint32, size) + jnp.asarray(start, jnp.uint32)
    his = jnp.broadcast_to(jnp.asarray(hi, jnp.uint32), (size,))
    return tuple(threefry2x32_p.bind(kd[0], kd[1], his, counters))  # type: ignore[return-value]


def _all_words(kd: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """The words of counters ``0 .. n - 1`` in one computation (the traced path)."""
    if n < 2**32:
        return _words(kd, 0, 0, n)
    rows = -(-n // 2**16)  # counter = row * 2**16 + column, split into two uint32 halves
    row = lax.broadcasted_iota(np.uint32, (rows, 2**16), 0)
    col = lax.broadcasted_iota(np.uint32, (rows, 2**16), 1)
    his = lax.shift_right_logical(row, np.uint32(16)).reshape(-1)[:n]
    los = lax.bitwise_or(lax.shift_left(row, np.uint32(16)), col).reshape(-1)[:n]
    return tuple(threefry2x32_p.bind(kd[0], kd[1], his, los))  # type: ignore[return-value]


# The eager path: one threefry program of _BLOCK counters serves every split and draw; a second,
# cheap program per kind of draw turns words into floats.
_words_block = jax.jit(functools.partial(_words, size=_BLOCK))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _finish(kind: str, scaled: bool, b1: jax.Array, b2: jax.Array, *p: Any) -> jax.Array:
    return _transform(kind, scaled, lax.bitwise_xor(b1, b2), p)  # type: ignore[arg-type]


def _eager_words(kd: jax.Array, n: int) -> list[tuple[jax.Array, jax.Array]]:
    """The words of counters ``0 .. n - 1``, block by block, as device arrays."""
    return [
        _words_block(kd, np.uint32(s >> 32), np.uint32(s & 0xFFFFFFFF))
        for s in range(0, max(n, 1), _BLOCK)
    ]


def split(key: jax.Array, num: int = 2) -> list[jax.Array]:
    """``list(jax.random.split(key, num))``, as jax's default (partitionable) threefry splits.

    Eagerly it needs no new compiled program for a new ``num`` (``jax.random.split`` compiles
    one per distinct ``num``). Keys come back of the kind given: typed (``jax.random.key``) or
    raw uint32 (``jax.random.PRNGKey``). Other key implementations go through jax.random.split.
    """
    kd = _threefry_data(key)
    if kd is None:
        return list(jax.random.split(key, num))
    if num <= 0:
        return []
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if isinstance(kd, jax.core.Tracer):  # under jit/eval_shape/vmap
        rows = list(jnp.stack(_all_words(kd, num), axis=1))
    else:
        pairs = [np.stack([np.asarray(w) for w in words], axis=1) for words in _eager_words(kd, num)]
        host = pairs[0] if len(pairs) == 1 else np.concatenate(pairs)
        rows = [host[i] for i in range(num)]
        if not typed:
            return [jax.device_put(r) for r in rows]
    if typed:
        impl = jax.random.key_impl(key)
        return [jax.random.wrap_key_data(r, impl=impl) for r in rows]
    return rows


def _draw(
    key: jax.Array, shape: Sequence[int], kind: str, *p: float, scaled: bool = False
) -> jax.Array | None:
    """A float32 draw of ``shape`` (see :func:`_transform`); None for a non-threefry key.

    Both paths evaluate the same expression of :func:`_transform` (so XLA fuses it, and rounds
    it, the same way): eagerly block by block, joined on the host; under a trace in one piece.
    """
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    kd = _threefry_data(key)
    if kd is None:
        return None
    f32 = tuple(np.float32(v) for v in p)
    if isinstance(kd, jax.core.Tracer):  # under jit/eval_shape/vmap: one XLA computation
        return jnp.reshape(_transform(kind, scaled, lax.bitwise_xor(*_all_words(kd, n)), f32), shape)
    blocks = [np.asarray(_finish(kind, scaled, *words, *f32)) for words in _eager_words(kd, n)]
    host = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return jax.device_put(host[:n].reshape(shape))  # no program (jnp.asarray compiles one per shape)


def uniform(key: jax.Array, shape: Sequence[int], bound: float, dtype: str = "float32") -> jax.Array:
    """``U(-bound, bound)``: the values of ``jax.random.uniform(key, shape, dtype, -bound, bound)``
    on a CPU with fused multiply-add (float32; see :func:`_transform` for why on every backend)."""
    if jnp.dtype(dtype) == jnp.float32:
        out = _draw(key, shape, "symmetric", bound)
        if out is not None:
            return out
    return jax.random.uniform(key, tuple(shape), jnp.dtype(dtype), -bound, bound)


def _uniform(key: jax.Array, shape: Sequence[int], a: float, b: float, dtype: str) -> jax.Array:
    if jnp.dtype(dtype) == jnp.float32:
        out = _draw(key, shape, "uniform", a, b)
        if out is not None:
            return out
    return jax.random.uniform(key, tuple(shape), jnp.dtype(dtype), a, b)


def torch_default(key: jax.Array, shape: Sequence[int], fan_in: int, dtype: str = "float32") -> jax.Array:
    """``kaiming_uniform_(a=sqrt(5))`` for weights and the matching bias init: ``U(±1/sqrt(fan_in))``."""
    return uniform(key, shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)


def weight_and_bias(
    key: jax.Array, weight_shape: Sequence[int], bias_size: int, *, bias: bool
) -> dict[str, jax.Array]:
    """``{"weight", "bias"}`` as PyTorch initialises Linear and conv layers: ``U(±1/sqrt(fan_in))``
    for both, with ``fan_in`` computed from ``weight_shape`` (dim 1 times the receptive field)."""
    fan_in = fans(weight_shape)[0]
    kw, kb = split(key)
    params = {"weight": torch_default(kw, weight_shape, fan_in)}
    if bias:
        params["bias"] = torch_default(kb, (bias_size,), fan_in)
    return params


def xavier_uniform(
    key: jax.Array, shape: Sequence[int], dtype: str = "float32", *, gain: float = 1.0
) -> jax.Array:
    """``torch.nn.init.xavier_uniform_``: ``U(±gain * sqrt(6 / (fan_in + fan_out)))``."""
    fan_in, fan_out = fans(shape)
    return uniform(key, shape, gain * math.sqrt(6.0 / (fan_in + fan_out)), dtype)


def normal(key: jax.Array, shape: Sequence[int], std: float = 1.0, dtype: str = "float32") -> jax.Array:
    """``N(0, std^2)``: the values of ``std * jax.random.normal(key, shape, dtype)``."""
    if jnp.dtype(dtype) == jnp.float32:
        out = _draw(key, shape, "normal", 0.0, std, scaled=std != 1.0)
        if out is not None:
            return out
    return std * jax.random.normal(key, tuple(shape), jnp.dtype(dtype))


def trunc_normal(
    key: jax.Array,
    shape: Sequence[int],
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    dtype: str = "float32",
) -> jax.Array:
    """``torch.nn.init.trunc_normal_``: ``N(mean, std^2)`` cut to ``[a, b]`` (absolute bounds)."""
    lo, hi = (a - mean) / std, (b - mean) / std
    if jnp.dtype(dtype) == jnp.float32:
        f32 = np.float32
        bounds = (math.erf(lo / math.sqrt(2)), math.erf(hi / math.sqrt(2)))
        cut = (np.nextafter(f32(lo), f32(np.inf)), np.nextafter(f32(hi), f32(-np.inf)))
        out = _draw(key, shape, "trunc_normal", *bounds, *cut, mean, std, scaled=True)
        if out is not None:
            return out
    z = jax.random.truncated_normal(key, lo, hi, tuple(shape), jnp.dtype(dtype))
    return (mean + std * z).astype(dtype)


# --- initialisers by name (nn.Parameter / nn.Buffer) ---------------------------------------------
def _zeros(key: jax.Array, shape: Sequence[int], dtype: str) -> jax.Array:
    return jnp.zeros(tuple(shape), dtype)


def _ones(key: jax.Array, shape: Sequence[int], dtype: str) -> jax.Array:
    return jnp.ones(tuple(shape), dtype)


def _constant(key: jax.Array, shape: Sequence[int], dtype: str, *, val: float) -> jax.Array:
    return jnp.full(tuple(shape), val, dtype)


def _normal(
    key: jax.Array, shape: Sequence[int], dtype: str, *, mean: float = 0.0, std: float = 1.0
) -> jax.Array:
    if jnp.dtype(dtype) == jnp.float32:
        out = _draw(key, shape, "normal", mean, std, scaled=(mean, std) != (0.0, 1.0))
        if out is not None:
            return out
    return (mean + std * jax.random.normal(key, tuple(shape), jnp.dtype(dtype))).astype(dtype)


def _uniform_ab(
    key: jax.Array, shape: Sequence[int], dtype: str, *, a: float = 0.0, b: float = 1.0
) -> jax.Array:
    return _uniform(key, shape, a, b, dtype)


def _trunc_normal(
    key: jax.Array,
    shape: Sequence[int],
    dtype: str,
    *,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
) -> jax.Array:
    return trunc_normal(key, shape, mean, std, a, b, dtype)


def _xavier_uniform(key: jax.Array, shape: Sequence[int], dtype: str, *, gain: float = 1.0) -> jax.Array:
    return xavier_uniform(key, shape, dtype, gain=gain)


def _arange(key: jax.Array, shape: Sequence[int], dtype: str) -> jax.Array:
    shape = tuple(shape)
    if not shape:
        return jnp.zeros((), dtype)
    return jnp.broadcast_to(jnp.arange(shape[-1], dtype=dtype), shape)


INITIALIZERS: dict[str, tuple[Callable[..., jax.Array], tuple[str, ...], str]] = {
    "zeros": (_zeros, (), "torch.nn.init.zeros_"),
    "ones": (_ones, (), "torch.nn.init.ones_"),
    "constant": (_constant, ("val",), "torch.nn.init.constant_(val)"),
    "normal": (_normal, ("mean", "std"), "torch.nn.init.normal_(mean=0, std=1)"),
    "uniform": (_uniform_ab, ("a", "b"), "torch.nn.init.uniform_(a=0, b=1)"),
    "trunc_normal": (_trunc_normal, ("mean", "std", "a", "b"), "torch.nn.init.trunc_normal_(mean=0, std=1, a=-2, b=2)"),
    "xavier_uniform": (_xavier_uniform, ("gain",), "torch.nn.init.xavier_uniform_(gain=1)"),
    "arange": (_arange, (), "0, 1, ... n-1 along the last axis, repeated over the others"),
}
"""Initialisers :func:`from_spec` knows: ``name -> (function, keyword names, meaning)``."""

_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$", re.S)
_ARG = re.compile(r"^\s*([a-z_]+)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def from_spec(spec: str) -> Initializer:
    """The initialiser a spec names: ``"zeros"``, ``"normal(std=0.02)"``, ``"constant(val=-1e4)"``.

    A spec is a name from :data:`INITIALIZERS` with optional keyword arguments whose values are
    numbers; it is plain text so a model's config stays JSON (nothing is evaluated).

    Args:
      spec: the spec text.

    Returns:
      ``init(key, shape, dtype) -> array``.

    Raises:
      ValueError: an unknown name, an argument the initialiser does not take, or a value that is
        not a number; the message lists what is accepted.
    """
    if not isinstance(spec, str):
        raise TypeError(f"an initialiser spec is a str such as 'normal(std=0.02)', got {spec!r}")
    m = _SPEC.match(spec)
    known = ", ".join(f"{n}({', '.join(a)})" if a else n for n, (_, a, _) in INITIALIZERS.items())
    if m is None or m.group(1) not in INITIALIZERS:
        raise ValueError(f"unknown initialiser {spec!r}; accepted: {known}.")
    fn, names, _ = INITIALIZERS[m.group(1)]
    kwargs: dict[str, float] = {}
    body = (m.group(2) or "").strip()
    for part in body.split(",") if body else []:
        am = _ARG.match(part)
        if am is None or am.group(1) not in names or am.group(1) in kwargs:
            raise ValueError(
                f"initialiser {spec!r}: cannot read {part.strip()!r}; {m.group(1)} takes "
                f"keyword arguments {names or '(none)'} with number values, e.g. "
                f"{m.group(1)}({', '.join(f'{n}=1.0' for n in names)})."
            )
        kwargs[am.group(1)] = float(am.group(2))
    if m.group(1) == "constant" and "val" not in kwargs:
        raise ValueError(f"initialiser {spec!r}: constant needs val=..., e.g. 'constant(val=0.5)'.")
    return functools.partial(fn, **kwargs)  # type: ignore[return-value]
