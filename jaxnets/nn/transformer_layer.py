"""TransformerEncoderLayer and TransformerDecoderLayer, with torch.nn's arguments, defaults,
state_dict keys and forward semantics (post-norm by default, ``norm_first`` for pre-norm), built on
:class:`~jaxnets.nn.MultiheadAttention`. The stacks and the full Transformer are in
:mod:`.transformer`.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn._utils import check, is_training
from jaxnets.nn.attention import MultiheadAttention
from jaxnets.nn.dropout import dropout
from jaxnets.nn.linear import Linear
from jaxnets.nn.module import Key, Module, Output, Params, State
from jaxnets.nn.norm_layer import LayerNorm

__all__ = ["TransformerEncoderLayer", "TransformerDecoderLayer", "generate_square_subsequent_mask"]

_ACTIVATIONS = {"relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False)}


def generate_square_subsequent_mask(sz: int, dtype: Any = jnp.float32) -> jax.Array:
    """torch's causal mask ``(sz, sz)``: ``-inf`` above the diagonal, 0 elsewhere."""
    upper = jnp.triu(jnp.ones((sz, sz), bool), k=1)
    return jnp.where(upper, jnp.asarray(-jnp.inf, dtype), jnp.zeros((), dtype))


def causal_mask(mask: Any, is_causal: bool | None, x: jax.Array, batch_first: bool) -> Any:
    """The mask to use: ``mask`` if given (torch's ``is_causal`` is only a hint about it), else a
    causal mask when ``is_causal`` (where torch would raise, needing the mask)."""
    if mask is not None or not is_causal:
        return mask
    return generate_square_subsequent_mask(x.shape[1 if batch_first and x.ndim == 3 else 0], x.dtype)


class _Layer(Module):
    """Fields and pieces shared by the encoder and decoder layers."""

    d_model: int
    nhead: int
    dim_feedforward: int = 2048
    dropout: float = 0.1
    activation: str | Module = "relu"
    layer_norm_eps: float = 1e-5
    batch_first: bool = False
    norm_first: bool = False
    bias: bool = True
    self_attn: MultiheadAttention = field(init=False, repr=False)
    linear1: Linear = field(init=False, repr=False)
    linear2: Linear = field(init=False, repr=False)
    norm1: LayerNorm = field(init=False, repr=False)
    norm2: LayerNorm = field(init=False, repr=False)

    _norms: ClassVar[tuple[str, ...]] = ("norm1", "norm2")

    def __post_init__(self) -> None:
        check(
            isinstance(self.activation, Module) or self.activation in _ACTIVATIONS,
            self,
            f"activation must be 'relu', 'gelu' or a jaxnets layer (a Python callable cannot be "
            f"stored in a config), got {self.activation!r}.",
        )
        check(0.0 <= self.dropout <= 1.0, self, f"dropout must be in [0, 1], got {self.dropout}.")
        d, b = self.d_model, self.bias
        self._set("self_attn", MultiheadAttention(d, self.nhead, self.dropout, b, self.batch_first))
        self._set("linear1", Linear(d, self.dim_feedforward, bias=b))
        self._set("linear2", Linear(self.dim_feedforward, d, bias=b))
        for name in self._norms:
            self._set(name, LayerNorm(d, eps=self.layer_norm_eps, bias=b))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _children_in_torch_order(self, attns: tuple[str, ...]) -> dict[str, Any]:
        names = attns + ("linear1", "linear2") + self._norms
        out = {n: getattr(self, n) for n in names}
        if isinstance(self.activation, Module):  # torch registers a module activation last
            out["activation"] = self.activation
        return out

    def _ff(self, params: Params, x: jax.Array, training: bool, keys: list[Key]) -> jax.Array:
        """linear2(dropout(activation(linear1(x)))), then dropout (torch's ``_ff_block``)."""
        h, _ = self.linear1.apply(params["linear1"], {}, x)
        if isinstance(self.activation, Module):
            h, _ = self.activation.apply(params.get("activation", {}), {}, h)
        else:
            h = _ACTIVATIONS[self.activation](h)
        h = dropout(self, self.dropout, h, training, keys[0])
        h, _ = self.linear2.apply(params["linear2"], {}, h)
        return dropout(self, self.dropout, h, training, keys[1])

    def _attend(
        self, name: str, params: Params, q: jax.Array, kv: jax.Array | None, mask: Any,
        padding: Any, training: bool, keys: list[Key],
    ) -> jax.Array:  # fmt: skip
        """Attention block + dropout (torch's ``_sa_block``/``_mha_block``)."""
        attn: MultiheadAttention = getattr(self, name)
        (y, _), _ = attn.apply(
            params[name], {}, q, kv, kv, attn_mask=mask, key_padding_mask=padding,
            need_weights=False, train=training, key=keys[0],
        )  # fmt: skip
        return dropout(self, self.dropout, y, training, keys[1])

    def _norm(self, name: str, params: Params, x: jax.Array) -> jax.Array:
        return getattr(self, name).apply(params[name], {}, x)[0]  # type: ignore[no-any-return]


def dropout_keys(key: Key, training: bool, n: int) -> list[Key]:
    if not training or key is None:
        return [None] * n  # dropout raises the missing-key error itself when it needs one
    return list(jax.random.split(key, n))


_LAYER_ARGS = """Args (torch's): ``d_model`` E, ``nhead`` (E divisible by it),
    ``dim_feedforward=2048``, ``dropout=0.1`` (attention weights, after attention, inside and
    after the feed-forward block), ``activation="relu"`` (``"gelu"``, or a jaxnets layer such as
    ``nn.GELU("tanh")``; torch's Python callables cannot be stored), ``layer_norm_eps=1e-5``,
    ``batch_first=False`` (``(S, N, E)`` inputs, torch's default), ``norm_first=False``
    (post-norm; True is pre-norm), ``bias=True`` (Linear and LayerNorm biases)."""

_MASKS = """Masks as :class:`~jaxnets.nn.MultiheadAttention`'s (bool ``True`` = masked, float masks
    added). ``is_causal`` is torch's hint that the mask is causal: with a mask, the mask is used;
    without one, a causal mask is applied (torch raises there)."""


@register(name="nn.TransformerEncoderLayer")
class TransformerEncoderLayer(_Layer):
    __doc__ = f"""Self-attention + feed-forward block, as ``torch.nn.TransformerEncoderLayer``.

    {_LAYER_ARGS}

    Params (torch's keys): ``self_attn.in_proj_weight``/``in_proj_bias``/``out_proj.*``,
    ``linear1.*``, ``linear2.*``, ``norm1.*``, ``norm2.*``; fresh values as torch's.

    Call: ``apply(params, state, src, *, src_mask=None, src_key_padding_mask=None,
    is_causal=False, train=False, key=None)``. Shapes: ``src (N, S, E)`` (``batch_first``),
    ``(S, N, E)`` or unbatched ``(S, E)`` -> same; ``src_mask (S, S)`` or ``(N*nhead, S, S)``,
    ``src_key_padding_mask (N, S)``. {_MASKS}

    Raises:
      ValueError: a bad hyperparameter or input shape, training with ``dropout > 0`` and no
        ``key``, or a traced ``train``.
    """

    def children(self) -> dict[str, Any]:
        return self._children_in_torch_order(("self_attn",))

    def apply(  # type: ignore[override]
        self, params: Params, state: State, src: Any, *, src_mask: Any = None,
        src_key_padding_mask: Any = None, is_causal: bool | None = False,
        train: bool = False, key: Key = None,
    ) -> Output:  # fmt: skip
        training = is_training(self, train)
        k = dropout_keys(key, training, 4)
        mask = causal_mask(src_mask, is_causal, src, self.batch_first)
        x = src
        if self.norm_first:
            h = self._norm("norm1", params, x)
            x = x + self._attend("self_attn", params, h, None, mask, src_key_padding_mask, training, k[:2])
            x = x + self._ff(params, self._norm("norm2", params, x), training, k[2:])
        else:
            a = self._attend("self_attn", params, x, None, mask, src_key_padding_mask, training, k[:2])
            x = self._norm("norm1", params, x + a)
            x = self._norm("norm2", params, x + self._ff(params, x, training, k[2:]))
        return x, state


@register(name="nn.TransformerDecoderLayer")
class TransformerDecoderLayer(_Layer):
    __doc__ = f"""Self-attention + cross-attention + feed-forward block, as
    ``torch.nn.TransformerDecoderLayer``.

    {_LAYER_ARGS}

    Params (torch's keys): ``self_attn.*``, ``multihead_attn.*``, ``linear1.*``, ``linear2.*``,
    ``norm1.*``, ``norm2.*``, ``norm3.*``.

    Call: ``apply(params, state, tgt, memory, *, tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=False,
    memory_is_causal=False, train=False, key=None)``. Shapes: ``tgt (N, T, E)``, ``memory
    (N, S, E)`` (``batch_first``; else sequence first) -> ``(N, T, E)``; ``tgt_mask (T, T)``,
    ``memory_mask (T, S)``, padding masks ``(N, T)`` and ``(N, S)``. {_MASKS}

    Raises:
      ValueError: a bad hyperparameter or input shape, training with ``dropout > 0`` and no
        ``key``, or a traced ``train``.
    """

    multihead_attn: MultiheadAttention = field(init=False, repr=False)
    norm3: LayerNorm = field(init=False, repr=False)

    _norms: ClassVar[tuple[str, ...]] = ("norm1", "norm2", "norm3")

    def __post_init__(self) -> None:
        super().__post_init__()
        d = self.d_model
        self._set("multihead_attn", MultiheadAttention(d, self.nhead, self.dropout, self.bias, self.batch_first))

    def children(self) -> dict[str, Any]:
        return self._children_in_torch_order(("self_attn", "multihead_attn"))

    def apply(  # type: ignore[override]
        self, params: Params, state: State, tgt: Any, memory: Any, *, tgt_mask: Any = None,
        memory_mask: Any = None, tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None, tgt_is_causal: bool | None = False,
        memory_is_causal: bool = False, train: bool = False, key: Key = None,
    ) -> Output:  # fmt: skip
        training = is_training(self, train)
        k = dropout_keys(key, training, 6)
        self_mask = causal_mask(tgt_mask, tgt_is_causal, tgt, self.batch_first)
        if memory_is_causal and memory_mask is None:
            memory_mask = causal_mask(None, True, memory, self.batch_first)
        x = tgt

        def sa(h: jax.Array) -> jax.Array:
            return self._attend("self_attn", params, h, None, self_mask, tgt_key_padding_mask, training, k[0:2])

        def mha(h: jax.Array) -> jax.Array:
            return self._attend(
                "multihead_attn", params, h, memory, memory_mask, memory_key_padding_mask, training, k[2:4]
            )

        if self.norm_first:
            x = x + sa(self._norm("norm1", params, x))
            x = x + mha(self._norm("norm2", params, x))
            x = x + self._ff(params, self._norm("norm3", params, x), training, k[4:])
        else:
            x = self._norm("norm1", params, x + sa(x))
            x = self._norm("norm2", params, x + mha(x))
            x = self._norm("norm3", params, x + self._ff(params, x, training, k[4:]))
        return x, state
