"""BERT with transformers' module names, so ``BertModel`` state_dicts load strictly.

``BertModel(**config)`` takes ``BertConfig``'s field names; keys are ``BertModel.state_dict()``'s:
``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query.weight``,
``encoder.layer.0.attention.output.LayerNorm.weight``, ``encoder.layer.0.intermediate.dense.weight``,
``pooler.dense.weight`` ... ``embeddings.position_ids`` is a non-persistent buffer in transformers
5 (not in its state_dict) and is computed in ``apply`` here.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.models._common import activation, attend, build, config_fields
from jaxnets.nn import Dropout, Embedding, LayerNorm, Linear, Module, Params, State, Tanh
from jaxnets.nn.module import Key, Output

__all__ = ["BertModel"]


@register(name="models.BertEmbeddings")
class BertEmbeddings(Module):
    """Word + position + token-type embeddings, LayerNorm, dropout. ``(N, L)`` ids -> ``(N, L, H)``."""

    vocab_size: int
    hidden_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_dropout_prob: float
    pad_token_id: int | None
    word_embeddings: Embedding = field(init=False, repr=False)
    position_embeddings: Embedding = field(init=False, repr=False)
    token_type_embeddings: Embedding = field(init=False, repr=False)
    LayerNorm: LayerNorm = field(init=False, repr=False)  # noqa: N815 (transformers' key)
    dropout: Dropout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        h = self.hidden_size
        build(
            self,
            word_embeddings=Embedding(self.vocab_size, h, padding_idx=self.pad_token_id),
            position_embeddings=Embedding(self.max_position_embeddings, h),
            token_type_embeddings=Embedding(self.type_vocab_size, h),
            LayerNorm=LayerNorm(h, eps=self.layer_norm_eps),
            dropout=Dropout(self.hidden_dropout_prob),
        )

    def apply(  # type: ignore[override]
        self, params: Params, state: State, input_ids: jax.Array, token_type_ids: jax.Array,
        position_ids: jax.Array, *, train: bool = False, key: Key = None,
    ) -> Output:
        m = self.bind(params, state, train=train, key=key)
        x = m.word_embeddings(input_ids) + m.token_type_embeddings(token_type_ids)
        x = x + m.position_embeddings(position_ids)
        return m.dropout(m.LayerNorm(x)), m.state


@register(name="models.BertSelfAttention")
class BertSelfAttention(Module):
    """``query``, ``key``, ``value`` projections and attention over ``num_attention_heads`` heads."""

    hidden_size: int
    num_attention_heads: int
    attention_probs_dropout_prob: float
    query: Linear = field(init=False, repr=False)
    key: Linear = field(init=False, repr=False)
    value: Linear = field(init=False, repr=False)
    dropout: Dropout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        h = self.hidden_size
        if h % self.num_attention_heads:
            raise ValueError(
                f"BertModel: hidden_size ({h}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})."
            )
        build(self, query=Linear(h, h), key=Linear(h, h), value=Linear(h, h),
              dropout=Dropout(self.attention_probs_dropout_prob))

    def apply(  # type: ignore[override]
        self, params: Params, state: State, x: jax.Array, allowed: jax.Array | None, *,
        train: bool = False, key: Key = None,
    ) -> Output:
        m = self.bind(params, state, train=train, key=key)
        scale = 1.0 / math.sqrt(self.hidden_size // self.num_attention_heads)
        out = attend(m.query(x), m.key(x), m.value(x), self.num_attention_heads, scale, allowed,
                     m.dropout)
        return out, m.state


@register(name="models.BertSelfOutput")
class BertSelfOutput(Module):
    """``LayerNorm(dropout(dense(h)) + residual)`` (also transformers' ``BertOutput``)."""

    in_features: int
    hidden_size: int
    layer_norm_eps: float
    hidden_dropout_prob: float
    dense: Linear = field(init=False, repr=False)
    LayerNorm: LayerNorm = field(init=False, repr=False)  # noqa: N815
    dropout: Dropout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        build(self, dense=Linear(self.in_features, self.hidden_size),
              LayerNorm=LayerNorm(self.hidden_size, eps=self.layer_norm_eps),
              dropout=Dropout(self.hidden_dropout_prob))

    def apply(  # type: ignore[override]
        self, params: Params, state: State, h: jax.Array, residual: jax.Array, *,
        train: bool = False, key: Key = None,
    ) -> Output:
        m = self.bind(params, state, train=train, key=key)
        return m.LayerNorm(m.dropout(m.dense(h)) + residual), m.state


@register(name="models.BertAttention")
class BertAttention(Module):
    """``self`` (attention) and ``output`` (projection, residual, LayerNorm)."""

    hidden_size: int
    num_attention_heads: int
    attention_probs_dropout_prob: float
    hidden_dropout_prob: float
    layer_norm_eps: float
    self: BertSelfAttention = field(init=False, repr=False)
    output: BertSelfOutput = field(init=False, repr=False)

    def __post_init__(__dataclass_self__) -> None:  # noqa: N805 (a field is named "self")
        m = __dataclass_self__
        build(m, self=BertSelfAttention(m.hidden_size, m.num_attention_heads,
                                        m.attention_probs_dropout_prob),
              output=BertSelfOutput(m.hidden_size, m.hidden_size, m.layer_norm_eps,
                                    m.hidden_dropout_prob))

    def apply(  # type: ignore[override]
        self_, params: Params, state: State, x: jax.Array, allowed: jax.Array | None, *,  # noqa: N805
        train: bool = False, key: Key = None,
    ) -> Output:
        m = self_.bind(params, state, train=train, key=key)
        return m.output(m.self(x, allowed), x), m.state


@register(name="models.BertIntermediate")
class BertIntermediate(Module):
    """``intermediate_act_fn(dense(h))``: ``(N, L, hidden)`` -> ``(N, L, intermediate)``."""

    hidden_size: int
    intermediate_size: int
    hidden_act: str
    dense: Linear = field(init=False, repr=False)
    intermediate_act_fn: Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        build(self, dense=Linear(self.hidden_size, self.intermediate_size),
              intermediate_act_fn=activation(self.hidden_act, "BertModel"))

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        m = self.bind(params, state, train=train, key=key)
        return m.intermediate_act_fn(m.dense(x)), m.state


@register(name="models.BertLayer")
class BertLayer(Module):
    """One encoder layer: ``attention``, ``intermediate``, ``output``. ``(N, L, H)`` -> same."""

    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    layer_norm_eps: float
    attention: BertAttention = field(init=False, repr=False)
    intermediate: BertIntermediate = field(init=False, repr=False)
    output: BertSelfOutput = field(init=False, repr=False)

    def __post_init__(self) -> None:
        build(
            self,
            attention=BertAttention(self.hidden_size, self.num_attention_heads,
                                    self.attention_probs_dropout_prob, self.hidden_dropout_prob,
                                    self.layer_norm_eps),
            intermediate=BertIntermediate(self.hidden_size, self.intermediate_size,
                                          self.hidden_act),
            output=BertSelfOutput(self.intermediate_size, self.hidden_size, self.layer_norm_eps,
                                  self.hidden_dropout_prob),
        )

    def apply(  # type: ignore[override]
        self, params: Params, state: State, x: jax.Array, allowed: jax.Array | None, *,
        train: bool = False, key: Key = None,
    ) -> Output:
        m = self.bind(params, state, train=train, key=key)
        h = m.attention(x, allowed)
        return m.output(m.intermediate(h), h), m.state


@register(name="models.BertEncoder")
class BertEncoder(Module):
    """``layer.0`` ... ``layer.{n-1}``."""

    layer: tuple[BertLayer, ...]

    def apply(  # type: ignore[override]
        self, params: Params, state: State, x: jax.Array, allowed: jax.Array | None, *,
        train: bool = False, key: Key = None,
    ) -> Output:
        m = self.bind(params, state, train=train, key=key)
        for block in m.layer:
            x = block(x, allowed)
        return x, m.state


@register(name="models.BertPooler")
class BertPooler(Module):
    """``tanh(dense(h[:, 0]))``: ``(N, L, H)`` -> ``(N, H)``."""

    hidden_size: int
    dense: Linear = field(init=False, repr=False)
    activation: Tanh = field(init=False, repr=False)

    def __post_init__(self) -> None:
        build(self, dense=Linear(self.hidden_size, self.hidden_size), activation=Tanh())

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        m = self.bind(params, state, train=train, key=key)
        return m.activation(m.dense(x[:, 0])), m.state


@register(name="models.BertModel")
class BertModel(Module):
    """transformers' ``BertModel`` (encoder only, absolute positions), with ``BertConfig``'s names.

    ``BertModel(**{k: v for k, v in config.items() if k in BertModel.config_fields()})`` builds
    the architecture of a Hugging Face ``config.json``.

    Call: ``apply(params, state, input_ids, *, attention_mask=None, token_type_ids=None,
    position_ids=None, train=False, key=None)`` returns ``((last_hidden_state, pooler_output),
    state)``: ``input_ids (N, L)`` int; ``attention_mask (N, L)`` 1 = attend, 0 = padding;
    ``token_type_ids`` default 0, ``position_ids`` default ``0..L-1``. Outputs ``(N, L, H)`` and
    ``(N, H)`` (``None`` without ``add_pooling_layer``).

    Fresh params use each layer's PyTorch default init (transformers draws N(0, 0.02^2)).

    Raises:
      ValueError: ``hidden_size`` not a multiple of ``num_attention_heads``, an unsupported
        ``hidden_act``, or a sequence longer than ``max_position_embeddings``.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    add_pooling_layer: bool = True
    embeddings: BertEmbeddings = field(init=False, repr=False)
    encoder: BertEncoder = field(init=False, repr=False)
    pooler: BertPooler | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        layer = BertLayer(self.hidden_size, self.num_attention_heads, self.intermediate_size,
                          self.hidden_act, self.hidden_dropout_prob,
                          self.attention_probs_dropout_prob, self.layer_norm_eps)
        build(
            self,
            embeddings=BertEmbeddings(self.vocab_size, self.hidden_size,
                                      self.max_position_embeddings, self.type_vocab_size,
                                      self.layer_norm_eps, self.hidden_dropout_prob,
                                      self.pad_token_id),
            encoder=BertEncoder((layer,) * self.num_hidden_layers),
            pooler=BertPooler(self.hidden_size) if self.add_pooling_layer else None,
        )

    @classmethod
    def config_fields(cls) -> tuple[str, ...]:
        """The ``BertConfig`` names this model takes."""
        return config_fields(cls)

    def apply(  # type: ignore[override]
        self, params: Params, state: State, input_ids: jax.Array, *,
        attention_mask: jax.Array | None = None, token_type_ids: jax.Array | None = None,
        position_ids: jax.Array | None = None, train: bool = False, key: Key = None,
    ) -> Output:
        n, length = input_ids.shape
        if length > self.max_position_embeddings:
            raise ValueError(
                f"BertModel: sequence length {length} is longer than max_position_embeddings "
                f"({self.max_position_embeddings})."
            )
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(length), (n, length))
        if token_type_ids is None:
            token_type_ids = jnp.zeros((n, length), jnp.int32)
        allowed = None
        if attention_mask is not None:  # (N, L) -> (N, 1, 1, S): padding keys are not attended
            allowed = jnp.asarray(attention_mask).astype(bool)[:, None, None, :]
        m = self.bind(params, state, train=train, key=key)
        h = m.encoder(m.embeddings(input_ids, token_type_ids, position_ids), allowed)
        pooled = m.pooler(h) if self.add_pooling_layer else None
        return (h, pooled), m.state
