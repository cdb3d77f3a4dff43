"""VisionTransformer with torchvision's module names, so torchvision's state_dicts load strictly.

``vit_b_16()`` ... build torchvision's structures; ``VisionTransformer(...)`` takes small sizes for
tests. Keys: ``class_token``, ``conv_proj.weight``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_0.ln_1.weight``, ``...self_attention.in_proj_weight``,
``...mlp.0.weight``, ``...mlp.3.weight``, ``encoder.ln.weight``, ``heads.head.weight``. NCHW inputs.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.models._common import build
from jaxnets.nn import (
    GELU,
    Conv2d,
    Dropout,
    LayerNorm,
    Linear,
    Module,
    MultiheadAttention,
    Parameter,
    Params,
    Sequential,
    State,
    Tanh,
)
from jaxnets.nn.module import Key, Output

__all__ = ["EncoderBlock", "Encoder", "VisionTransformer", "vit_b_16", "vit_b_32", "vit_l_16",
           "vit_l_32", "vit_h_14"]


@register(name="models.EncoderBlock")
class EncoderBlock(Module):
    """torchvision's ViT ``EncoderBlock``: pre-norm self-attention and MLP, each residual.

    Shapes: ``(N, L, hidden_dim)`` -> same.
    """

    num_heads: int
    hidden_dim: int
    mlp_dim: int
    dropout: float = 0.0
    attention_dropout: float = 0.0
    ln_1: LayerNorm = field(init=False, repr=False)
    self_attention: MultiheadAttention = field(init=False, repr=False)
    dropout_layer: Dropout = field(init=False, repr=False)  # torchvision's "dropout": no params
    ln_2: LayerNorm = field(init=False, repr=False)
    mlp: Sequential = field(init=False, repr=False)

    def __post_init__(self) -> None:
        d = self.hidden_dim
        build(
            self,
            ln_1=LayerNorm(d, eps=1e-6),
            self_attention=MultiheadAttention(d, self.num_heads, dropout=self.attention_dropout,
                                              batch_first=True),
            dropout_layer=Dropout(self.dropout),
            ln_2=LayerNorm(d, eps=1e-6),
            mlp=Sequential(Linear(d, self.mlp_dim), GELU(), Dropout(self.dropout),
                           Linear(self.mlp_dim, d), Dropout(self.dropout)),
        )

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        m = self.bind(params, state, train=train, key=key)
        y, _ = m.self_attention(m.ln_1(x), need_weights=False)
        x = x + m.dropout_layer(y)
        return x + m.mlp(m.ln_2(x)), m.state


@register(name="models.EncoderLayers")
class EncoderLayers(Module):
    """torchvision's ``Sequential(OrderedDict(encoder_layer_0=..., ...))``: named blocks in order."""

    layers: tuple[Module, ...]

    def children(self) -> dict[str, Module | tuple[Module, ...]]:
        return {f"encoder_layer_{i}": layer for i, layer in enumerate(self.layers)}

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        m = self.bind(params, state, train=train, key=key)
        for name in m:
            x = getattr(m, name)(x)
        return x, m.state


@register(name="models.Encoder")
class Encoder(Module):
    """torchvision's ViT ``Encoder``: learned positions, blocks, final LayerNorm.

    Params: ``pos_embedding (1, seq_length, hidden_dim)`` ~ N(0, 0.02^2), then the blocks'.
    Shapes: ``(N, seq_length, hidden_dim)`` -> same.
    """

    seq_length: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    mlp_dim: int
    dropout: float = 0.0
    attention_dropout: float = 0.0
    pos_embedding: Parameter = field(init=False, repr=False)
    dropout_layer: Dropout = field(init=False, repr=False)
    layers: EncoderLayers = field(init=False, repr=False)
    ln: LayerNorm = field(init=False, repr=False)

    def __post_init__(self) -> None:
        blocks = tuple(
            EncoderBlock(self.num_heads, self.hidden_dim, self.mlp_dim, self.dropout,
                         self.attention_dropout)
            for _ in range(self.num_layers)
        )
        build(
            self,
            pos_embedding=Parameter((1, self.seq_length, self.hidden_dim), init="normal(std=0.02)"),
            dropout_layer=Dropout(self.dropout),
            layers=EncoderLayers(blocks),
            ln=LayerNorm(self.hidden_dim, eps=1e-6),
        )

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        m = self.bind(params, state, train=train, key=key)
        x = x + m.pos_embedding
        return m.ln(m.layers(m.dropout_layer(x))), m.state


@register(name="models.Heads")
class Heads(Module):
    """torchvision's ViT ``heads``: ``head`` (and ``pre_logits`` + tanh with a representation)."""

    hidden_dim: int
    num_classes: int
    representation_size: int | None = None
    pre_logits: Linear | None = field(init=False, repr=False)
    act: Tanh | None = field(init=False, repr=False)
    head: Linear = field(init=False, repr=False)

    def __post_init__(self) -> None:
        r = self.representation_size
        build(
            self,
            pre_logits=None if r is None else Linear(self.hidden_dim, r),
            act=None if r is None else Tanh(),
            head=Linear(self.hidden_dim if r is None else r, self.num_classes),
        )

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        m = self.bind(params, state, train=train, key=key)
        if self.representation_size is not None:
            x = m.act(m.pre_logits(x))
        return m.head(x), m.state


@register(name="models.VisionTransformer")
class VisionTransformer(Module):
    """torchvision's ``VisionTransformer`` (arguments, keys and computation).

    Args:
      image_size, patch_size: input side (square) and patch side; ``image_size % patch_size == 0``.
      num_layers, num_heads, hidden_dim, mlp_dim: encoder sizes.
      dropout, attention_dropout: in training.
      num_classes: outputs of ``heads.head``.
      representation_size: adds ``heads.pre_logits`` (and a tanh) when given.

    Params: ``class_token (1, 1, hidden_dim)`` = 0, ``conv_proj`` (patch embedding), the
    encoder's, the heads'. Fresh params use each layer's PyTorch default init (torchvision
    re-draws ``conv_proj`` with a truncated normal and zeroes ``heads.head``).

    Shapes: ``(N, 3, image_size, image_size)`` -> ``(N, num_classes)``.

    Raises:
      ValueError: ``image_size`` not divisible by ``patch_size``, or an input of another size.
    """

    image_size: int
    patch_size: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    mlp_dim: int
    dropout: float = 0.0
    attention_dropout: float = 0.0
    num_classes: int = 1000
    representation_size: int | None = None
    conv_proj: Conv2d = field(init=False, repr=False)
    class_token: Parameter = field(init=False, repr=False)
    encoder: Encoder = field(init=False, repr=False)
    heads: Heads = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"VisionTransformer: image_size ({self.image_size}) must be divisible by "
                f"patch_size ({self.patch_size})."
            )
        seq_length = (self.image_size // self.patch_size) ** 2 + 1
        build(
            self,
            conv_proj=Conv2d(3, self.hidden_dim, self.patch_size, stride=self.patch_size),
            class_token=Parameter((1, 1, self.hidden_dim)),
            encoder=Encoder(seq_length, self.num_layers, self.num_heads, self.hidden_dim,
                            self.mlp_dim, self.dropout, self.attention_dropout),
            heads=Heads(self.hidden_dim, self.num_classes, self.representation_size),
        )

    def apply(self, params: Params, state: State, x: Any, *, train: bool = False,
              key: Key = None) -> Output:
        if x.ndim != 4 or x.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"VisionTransformer: expected input (N, 3, {self.image_size}, {self.image_size}), "
                f"got shape {tuple(x.shape)}."
            )
        m = self.bind(params, state, train=train, key=key)
        x = m.conv_proj(x)  # (N, D, H/p, W/p) -> (N, L, D)
        n = x.shape[0]
        x = jnp.transpose(jnp.reshape(x, (n, self.hidden_dim, -1)), (0, 2, 1))
        cls = jnp.broadcast_to(m.class_token, (n, 1, self.hidden_dim))
        x = m.encoder(jnp.concatenate([cls, x], axis=1))
        return m.heads(x[:, 0]), m.state


def _vit(patch: int, layers: int, heads: int, hidden: int, mlp: int, image_size: int,
         num_classes: int) -> VisionTransformer:
    return VisionTransformer(image_size, patch, layers, heads, hidden, mlp, num_classes=num_classes)


def vit_b_16(num_classes: int = 1000, image_size: int = 224) -> VisionTransformer:
    """torchvision's ``vit_b_16`` structure (86.6M params)."""
    return _vit(16, 12, 12, 768, 3072, image_size, num_classes)


def vit_b_32(num_classes: int = 1000, image_size: int = 224) -> VisionTransformer:
    """torchvision's ``vit_b_32`` structure."""
    return _vit(32, 12, 12, 768, 3072, image_size, num_classes)


def vit_l_16(num_classes: int = 1000, image_size: int = 224) -> VisionTransformer:
    """torchvision's ``vit_l_16`` structure."""
    return _vit(16, 24, 16, 1024, 4096, image_size, num_classes)


def vit_l_32(num_classes: int = 1000, image_size: int = 224) -> VisionTransformer:
    """torchvision's ``vit_l_32`` structure."""
    return _vit(32, 24, 16, 1024, 4096, image_size, num_classes)


def vit_h_14(num_classes: int = 1000, image_size: int = 224) -> VisionTransformer:
    """torchvision's ``vit_h_14`` structure."""
    return _vit(14, 32, 16, 1280, 5120, image_size, num_classes)
