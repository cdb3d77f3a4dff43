"""MultiheadAttention with torch.nn.MultiheadAttention's arguments, parameter keys and masks."""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn import init as initializers
from jaxnets.nn._utils import check
from jaxnets.nn.dropout import dropout
from jaxnets.nn.linear import Linear
from jaxnets.nn.module import Module, Params, State

__all__ = ["MultiheadAttention"]


@register(name="nn.MultiheadAttention")
class MultiheadAttention(Module):
    """Multi-head scaled dot-product attention, as ``torch.nn.MultiheadAttention``.

    Args (torch's names and defaults): ``embed_dim`` E, ``num_heads`` H (E divisible by H),
    ``dropout=0.0`` (on the attention weights, in training), ``bias=True``,
    ``batch_first=False`` (torch's default: ``(L, N, E)`` inputs; pass ``True`` for
    ``(N, L, E)``). torch's ``add_bias_kv``, ``add_zero_attn``, ``kdim`` and ``vdim`` are not
    supported (key and value have E features).

    Params (torch's keys, layouts and init): ``in_proj_weight (3E, E)`` (xavier-uniform; rows are
    q, k, v), ``in_proj_bias (3E,)`` = 0, ``out_proj.weight (E, E)`` (Linear's init),
    ``out_proj.bias (E,)`` = 0; the biases only when ``bias``. ``out_proj`` is a child
    :class:`~jaxnets.nn.Linear`.

    Call: ``apply(params, state, query, key_input=None, value=None, *, key_padding_mask=None,
    need_weights=True, attn_mask=None, average_attn_weights=True, train=False, key=None)``
    returns ``((out, weights), state)`` as torch's ``forward`` returns ``(out, weights)``; the
    key/value input is ``key_input`` because ``key`` is the PRNG key keyword. Omitted
    ``key_input``/``value`` mean self-attention (``value`` defaults to ``key_input``).

    Shapes (``batch_first=True``; with False swap N and L/S; unbatched drops N):
    ``query (N, L, E)``, ``key_input``/``value (N, S, E)`` -> ``out (N, L, E)``; ``weights (N, L,
    S)`` averaged over heads, ``(N, H, L, S)`` with ``average_attn_weights=False``, ``None`` with
    ``need_weights=False``. Masks as torch: ``key_padding_mask (N, S)`` and ``attn_mask (L, S)``
    or ``(N*H, L, S)``; bool ``True`` = not attended, float masks are added to the scores.

    Raises:
      ValueError: E not divisible by H, a wrong input or mask shape, ``train=True`` with
        ``dropout > 0`` and no ``key``, or a traced ``train`` (mark it static in ``jax.jit``).
    """

    embed_dim: int
    num_heads: int
    dropout: float = 0.0
    bias: bool = True
    batch_first: bool = False
    out_proj: Linear = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check(
            self.num_heads >= 1 and self.embed_dim % self.num_heads == 0,
            self,
            f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads}).",
        )
        check(0.0 <= self.dropout <= 1.0, self, f"dropout must be in [0, 1], got {self.dropout}.")
        object.__setattr__(self, "out_proj", Linear(self.embed_dim, self.embed_dim, bias=self.bias))

    def init(self, key: jax.Array) -> tuple[Params, State]:
        e = self.embed_dim
        k_in, k_out = jax.random.split(key)
        params: Params = {"in_proj_weight": initializers.xavier_uniform(k_in, (3 * e, e))}
        if self.bias:
            params["in_proj_bias"] = jnp.zeros((3 * e,), jnp.float32)
        out, _ = self.out_proj.init(k_out)
        if self.bias:
            out["bias"] = jnp.zeros((e,), jnp.float32)
        params["out_proj"] = out
        return params, {}

    def _project(self, params: Params, x: jax.Array, rows: slice) -> jax.Array:
        w = params["in_proj_weight"][rows]
        y = jnp.matmul(x, w.T)
        if self.bias:
            y = y + params["in_proj_bias"][rows].reshape((1,) * (x.ndim - 1) + (-1,))
        return y

    def apply(  # type: ignore[override]
        self,
        params: Params,
        state: State,
        query: jax.Array,
        key_input: jax.Array | None = None,
        value: jax.Array | None = None,
        *,
        key_padding_mask: jax.Array | None = None,
        need_weights: bool = True,
        attn_mask: jax.Array | None = None,
        average_attn_weights: bool = True,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[tuple[jax.Array, jax.Array | None], State]:
        e, h = self.embed_dim, self.num_heads
        d = e // h
        self_attn = key_input is None and value is None
        kv = query if key_input is None else key_input
        value = kv if value is None else value
        check(
            query.ndim in (2, 3) and query.shape[-1] == e,
            self,
            f"expected query (N, L, {e}) or (L, {e}), got shape {query.shape}.",
        )
        check(
            kv.ndim == query.ndim and value.shape == kv.shape,
            self,
            f"key_input {kv.shape} and value {value.shape} must match each other and the query's rank {query.ndim}.",
        )
        unbatched = query.ndim == 2
        if unbatched:
            query, kv, value = query[None], kv[None], value[None]
        elif not self.batch_first:
            query, kv, value = (jnp.swapaxes(t, 0, 1) for t in (query, kv, value))
        n, q_len, s_len = query.shape[0], query.shape[1], kv.shape[1]

        if self_attn:  # one fused (E -> 3E) projection, as torch's fast path
            q, k, v = jnp.split(self._project(params, query, slice(None)), 3, axis=-1)
        else:
            q = self._project(params, query, slice(0, e))
            k = self._project(params, kv, slice(e, 2 * e))
            v = self._project(params, value, slice(2 * e, 3 * e))
        q = q.reshape(n, q_len, h, d) * (1.0 / math.sqrt(d))
        k = k.reshape(n, s_len, h, d)
        v = v.reshape(n, s_len, h, d)
        scores = jnp.einsum("nlhd,nshd->nhls", q, k)
        scores = scores + self._bias(
            attn_mask, key_padding_mask, n, q_len, s_len, scores.dtype, unbatched
        )
        weights = jax.nn.softmax(scores, axis=-1)
        # torch drops attention weights (and returns them dropped) in training
        dropped = dropout(self, self.dropout, weights, train, key)  # dropout() checks train
        out = jnp.einsum("nhls,nshd->nlhd", dropped, v).reshape(n, q_len, e)
        out, _ = self.out_proj.apply(params["out_proj"], {}, out)

        if unbatched:
            out = out[0]
        elif not self.batch_first:
            out = jnp.swapaxes(out, 0, 1)
        if not need_weights:
            return (out, None), state
        # torch returns the weights after dropout
        w = dropped.mean(axis=1) if average_attn_weights else dropped
        return (out, w[0] if unbatched else w), state

    def _bias(
        self,
        attn_mask: Any,
        key_padding_mask: Any,
        n: int,
        q_len: int,
        s_len: int,
        dtype: Any,
        unbatched: bool,
    ) -> jax.Array:
        """The masks as one additive ``(N, H, L, S)``-broadcastable float: bool True -> -inf."""
        h = self.num_heads
        total = jnp.zeros((1, 1, 1, 1), dtype)
        if attn_mask is not None:
            m = _additive(attn_mask, dtype)
            if m.ndim == 2:
                check(
                    m.shape == (q_len, s_len),
                    self,
                    f"attn_mask must be ({q_len}, {s_len}) or ({n * h}, {q_len}, {s_len}), got {m.shape}.",
                )
                m = m.reshape(1, 1, q_len, s_len)
            else:
                check(
                    m.shape == (n * h, q_len, s_len),
                    self,
                    f"attn_mask must be ({q_len}, {s_len}) or ({n * h}, {q_len}, {s_len}), got {m.shape}.",
                )
                m = m.reshape(n, h, q_len, s_len)
            total = total + m
        if key_padding_mask is not None:
            m = _additive(key_padding_mask, dtype)
            want = (s_len,) if unbatched else (n, s_len)
            check(m.shape == want, self, f"key_padding_mask must be {want}, got {m.shape}.")
            total = total + m.reshape(n, 1, 1, s_len)
        return total


def _additive(mask: Any, dtype: Any) -> jax.Array:
    """torch's mask convention: bool True = masked out (-inf); float masks are added as they are."""
    mask = jnp.asarray(mask)
    if mask.dtype == jnp.bool_:
        return jnp.where(mask, jnp.asarray(-jnp.inf, dtype), jnp.zeros((), dtype))
    return mask.astype(dtype)
