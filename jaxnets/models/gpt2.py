"""GPT-2 with transformers' module names and layouts, so ``GPT2Model`` state_dicts load strictly.

``GPT2Model(**config)`` takes ``GPT2Config``'s field names; keys are ``GPT2Model.state_dict()``'s:
``wte.weight``, ``wpe.weight``, ``h.0.ln_1.weight``, ``h.0.attn.c_attn.weight``,
``h.0.mlp.c_fc.weight``, ``ln_f.weight`` ... The projections are transformers' ``Conv1D``, whose
``weight`` is ``(in_features, out_features)``, the transpose of ``nn.Linear``'s: loading GPT-2
weights into a model built from ``nn.Linear`` needs a transpose (docs/migrating_from_pytorch.md).
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.models._common import activation, attend, build, config_fields
from jaxnets.nn import Dropout, Embedding, LayerNorm, Module, Parameter, Params, State
from jaxnets.nn.module import Key, Output

__all__ = ["Conv1D", "GPT2Attention", "GPT2MLP", "GPT2Block", "GPT2Model"]


@register(name="models.Conv1D")
class Conv1D(Module):
    """transformers' ``Conv1D(nf, nx)``: ``y = x @ weight + bias``, a Linear stored transposed.

    Params: ``weight (nx, nf)`` ~ N(0, 0.02^2) and ``bias (nf,)`` = 0, as transformers draws them.
    Shapes: ``(..., nx)`` -> ``(..., nf)``.
    """

    nf: int
    nx: int
    weight: Parameter = field(init=False, repr=False)
    bias: Parameter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        build(self, weight=Parameter((self.nx, self.nf), init="normal(std=0.02)"),
              bias=Parameter((self.nf,)))

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        y = jnp.matmul(x, params["weight"])
        return y + jnp.reshape(params["bias"], (1,) * (y.ndim - 1) + (-1,)), state


@register(name="models.GPT2Attention")
class GPT2Attention(Module):
    """Causal self-attention: ``c_attn`` (q, k, v in one ``Conv1D``), ``c_proj``, dropouts."""

    n_embd: int
    n_head: int
    attn_pdrop: float
    resid_pdrop: float
    scale_attn_weights: bool = True
    layer_idx: int = 0
    scale_attn_by_inverse_layer_idx: bool = False
    c_attn: Conv1D = field(init=False, repr=False)
    c_proj: Conv1D = field(init=False, repr=False)
    attn_dropout: Dropout = field(init=False, repr=False)
    resid_dropout: Dropout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        e = self.n_embd
        if e % self.n_head:
            raise ValueError(f"GPT2Model: n_embd ({e}) must be divisible by n_head ({self.n_head}).")
        build(self, c_attn=Conv1D(3 * e, e), c_proj=Conv1D(e, e),
              attn_dropout=Dropout(self.attn_pdrop), resid_dropout=Dropout(self.resid_pdrop))

    def apply(  # type: ignore[override]
        self, params: Params, state: State, x: jax.Array, allowed: jax.Array, *,
        train: bool = False, key: Key = None,
    ) -> Output:
        m = self.bind(params, state, train=train, key=key)
        q, k, v = jnp.split(m.c_attn(x), 3, axis=-1)
        scale = 1.0 / math.sqrt(self.n_embd // self.n_head) if self.scale_attn_weights else 1.0
        if self.scale_attn_by_inverse_layer_idx:
            scale /= float(self.layer_idx + 1)
        out = attend(q, k, v, self.n_head, scale, allowed, m.attn_dropout)
        return m.resid_dropout(m.c_proj(out)), m.state


@register(name="models.GPT2MLP")
class GPT2MLP(Module):
    """``dropout(c_proj(act(c_fc(x))))``: ``(..., n_embd)`` -> same."""

    n_embd: int
    n_inner: int
    activation_function: str
    resid_pdrop: float
    c_fc: Conv1D = field(init=False, repr=False)
    c_proj: Conv1D = field(init=False, repr=False)
    act: Module = field(init=False, repr=False)
    dropout: Dropout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        build(self, c_fc=Conv1D(self.n_inner, self.n_embd), c_proj=Conv1D(self.n_embd, self.n_inner),
              act=activation(self.activation_function, "GPT2Model"),
              dropout=Dropout(self.resid_pdrop))

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        m = self.bind(params, state, train=train, key=key)
        return m.dropout(m.c_proj(m.act(m.c_fc(x)))), m.state


@register(name="models.GPT2Block")
class GPT2Block(Module):
    """Pre-norm block: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(.))``. ``(N, L, E)`` -> same."""

    n_embd: int
    n_head: int
    n_inner: int
    activation_function: str
    layer_norm_epsilon: float
    attn_pdrop: float
    resid_pdrop: float
    scale_attn_weights: bool = True
    layer_idx: int = 0
    scale_attn_by_inverse_layer_idx: bool = False
    ln_1: LayerNorm = field(init=False, repr=False)
    attn: GPT2Attention = field(init=False, repr=False)
    ln_2: LayerNorm = field(init=False, repr=False)
    mlp: GPT2MLP = field(init=False, repr=False)

    def __post_init__(self) -> None:
        e = self.n_embd
        build(
            self,
            ln_1=LayerNorm(e, eps=self.layer_norm_epsilon),
            attn=GPT2Attention(e, self.n_head, self.attn_pdrop, self.resid_pdrop,
                               self.scale_attn_weights, self.layer_idx,
                               self.scale_attn_by_inverse_layer_idx),
            ln_2=LayerNorm(e, eps=self.layer_norm_epsilon),
            mlp=GPT2MLP(e, self.n_inner, self.activation_function, self.resid_pdrop),
        )

    def apply(  # type: ignore[override]
        self, params: Params, state: State, x: jax.Array, allowed: jax.Array, *,
        train: bool = False, key: Key = None,
    ) -> Output:
        m = self.bind(params, state, train=train, key=key)
        x = x + m.attn(m.ln_1(x), allowed)
        return x + m.mlp(m.ln_2(x)), m.state


@register(name="models.GPT2Model")
class GPT2Model(Module):
    """transformers' ``GPT2Model`` (no cache, no cross-attention), with ``GPT2Config``'s names.

    ``GPT2Model(**{k: v for k, v in config.items() if k in GPT2Model.config_fields()})`` builds
    the architecture of a Hugging Face ``config.json``.

    Call: ``apply(params, state, input_ids, *, attention_mask=None, position_ids=None,
    token_type_ids=None, train=False, key=None)`` returns ``(last_hidden_state, state)``:
    ``input_ids (N, L)`` int -> ``(N, L, n_embd)``. Attention is causal; ``attention_mask (N, L)``
    (1 = token, 0 = padding) also hides padding keys. ``position_ids`` default ``0..L-1``;
    ``token_type_ids`` are embedded with ``wte``, as transformers does.

    Fresh params: ``Conv1D`` as transformers draws them, ``nn.Embedding``/``nn.LayerNorm``
    defaults elsewhere (transformers draws the embeddings N(0, 0.02^2)).

    Raises:
      ValueError: ``n_embd`` not divisible by ``n_head``, an unsupported activation, or a
        sequence longer than ``n_positions``.
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    wte: Embedding = field(init=False, repr=False)
    wpe: Embedding = field(init=False, repr=False)
    drop: Dropout = field(init=False, repr=False)
    h: tuple[GPT2Block, ...] = field(init=False, repr=False)
    ln_f: LayerNorm = field(init=False, repr=False)

    def __post_init__(self) -> None:
        e = self.n_embd
        inner = self.n_inner if self.n_inner is not None else 4 * e
        blocks = tuple(
            GPT2Block(e, self.n_head, inner, self.activation_function, self.layer_norm_epsilon,
                      self.attn_pdrop, self.resid_pdrop, self.scale_attn_weights, i,
                      self.scale_attn_by_inverse_layer_idx)
            for i in range(self.n_layer)
        )
        build(self, wte=Embedding(self.vocab_size, e), wpe=Embedding(self.n_positions, e),
              drop=Dropout(self.embd_pdrop), h=blocks,
              ln_f=LayerNorm(e, eps=self.layer_norm_epsilon))

    @classmethod
    def config_fields(cls) -> tuple[str, ...]:
        """The ``GPT2Config`` names this model takes."""
        return config_fields(cls)

    def apply(  # type: ignore[override]
        self, params: Params, state: State, input_ids: jax.Array, *,
        attention_mask: jax.Array | None = None, position_ids: jax.Array | None = None,
        token_type_ids: jax.Array | None = None, train: bool = False, key: Key = None,
    ) -> Output:
        n, length = input_ids.shape
        if length > self.n_positions:
            raise ValueError(
                f"GPT2Model: sequence length {length} is longer than n_positions ({self.n_positions})."
            )
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(length), (n, length))
        allowed = jnp.tril(jnp.ones((length, length), bool))[None, None]  # (1, 1, L, S)
        if attention_mask is not None:
            allowed = allowed & jnp.asarray(attention_mask).astype(bool)[:, None, None, :]
        m = self.bind(params, state, train=train, key=key)
        x = m.wte(input_ids) + m.wpe(position_ids)
        if token_type_ids is not None:
            x = x + m.wte(token_type_ids)
        x = m.drop(x)
        for block in m.h:
            x = block(x, allowed)
        return m.ln_f(x), m.state
