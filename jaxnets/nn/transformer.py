"""TransformerEncoder, TransformerDecoder and Transformer, with torch.nn's arguments, defaults,
state_dict keys (``layers.0.self_attn.in_proj_weight``, ``encoder.norm.weight``) and forward
semantics. The layers they stack are in :mod:`.transformer_layer`.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn import init as initializers
from jaxnets.nn._utils import check, is_training
from jaxnets.nn.module import Key, Module, Output, Params, State
from jaxnets.nn.norm_layer import LayerNorm
from jaxnets.nn.transformer_layer import (
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    causal_mask,
    dropout_keys,
    generate_square_subsequent_mask,
)

__all__ = ["TransformerEncoder", "TransformerDecoder", "Transformer"]


class _Stack(Module):
    """``num_layers`` copies of one layer (``layers.0``, ``layers.1``, ...) and an optional norm.

    As torch (which deep-copies the layer it is given), every copy starts from the same values.
    """

    def _parts(self) -> tuple[Any, int, Any]:
        """``(layer, num_layers, norm or None)`` (each stack names its layer field as torch)."""
        raise NotImplementedError

    def children(self) -> dict[str, Any]:
        layer, n, norm = self._parts()
        kids: dict[str, Any] = {"layers": (layer,) * n}
        if norm is not None:
            kids["norm"] = norm
        return kids

    def init(self, key: jax.Array) -> tuple[Params, State]:
        layer, n, norm = self._parts()
        k_layer, k_norm = jax.random.split(key)
        p, s = layer.init(k_layer)
        params: Params = {"layers": {str(i): p for i in range(n)}}
        state: State = {"layers": {str(i): s for i in range(n)}}
        if norm is not None:
            params["norm"], state["norm"] = norm.init(k_norm)
        return params, state

    def _finish(self, params: Params, x: jax.Array) -> jax.Array:
        norm = self._parts()[2]
        return x if norm is None else norm.apply(params["norm"], {}, x)[0]


@register(name="nn.TransformerEncoder")
class TransformerEncoder(_Stack):
    """A stack of ``num_layers`` copies of ``encoder_layer``, then ``norm`` if given, as
    ``torch.nn.TransformerEncoder(encoder_layer, num_layers, norm=None)``.

    Keys: ``layers.0.self_attn.in_proj_weight``, ..., ``norm.weight``. Every layer starts from
    the same values, as torch's deep copies do. ``enable_nested_tensor`` and ``mask_check`` are
    accepted and have no effect: torch's nested-tensor fast path (eval, with a padding mask)
    returns 0 at padded positions, where jaxnets returns the computed values; compare only
    unpadded positions.

    Call: ``apply(params, state, src, *, mask=None, src_key_padding_mask=None, is_causal=None,
    train=False, key=None)``; shapes and masks as :class:`TransformerEncoderLayer`'s.
    """

    encoder_layer: TransformerEncoderLayer
    num_layers: int
    norm: Module | None = None
    enable_nested_tensor: bool = True
    mask_check: bool = True

    def _parts(self) -> tuple[Any, int, Any]:
        return self.encoder_layer, self.num_layers, self.norm

    def apply(  # type: ignore[override]
        self, params: Params, state: State, src: Any, *, mask: Any = None,
        src_key_padding_mask: Any = None, is_causal: bool | None = None,
        train: bool = False, key: Key = None,
    ) -> Output:  # fmt: skip
        training = is_training(self, train)
        mask = causal_mask(mask, is_causal, src, self.encoder_layer.batch_first)
        x = src
        for i in range(self.num_layers):
            k = None if key is None else jax.random.fold_in(key, i)
            x, _ = self.encoder_layer.apply(
                params["layers"][str(i)], {}, x, src_mask=mask,
                src_key_padding_mask=src_key_padding_mask, train=training, key=k,
            )  # fmt: skip
        return self._finish(params, x), state


@register(name="nn.TransformerDecoder")
class TransformerDecoder(_Stack):
    """A stack of ``num_layers`` copies of ``decoder_layer``, then ``norm`` if given, as
    ``torch.nn.TransformerDecoder(decoder_layer, num_layers, norm=None)``.

    Keys: ``layers.0.self_attn.*``, ``layers.0.multihead_attn.*``, ..., ``norm.weight``; every
    layer starts from the same values, as torch's.

    Call: ``apply(params, state, tgt, memory, *, tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=None,
    memory_is_causal=False, train=False, key=None)``; as :class:`TransformerDecoderLayer`'s.
    """

    decoder_layer: TransformerDecoderLayer
    num_layers: int
    norm: Module | None = None

    def _parts(self) -> tuple[Any, int, Any]:
        return self.decoder_layer, self.num_layers, self.norm

    def apply(  # type: ignore[override]
        self, params: Params, state: State, tgt: Any, memory: Any, *, tgt_mask: Any = None,
        memory_mask: Any = None, tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None, tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False, train: bool = False, key: Key = None,
    ) -> Output:  # fmt: skip
        training = is_training(self, train)
        tgt_mask = causal_mask(tgt_mask, tgt_is_causal, tgt, self.decoder_layer.batch_first)
        x = tgt
        for i in range(self.num_layers):
            k = None if key is None else jax.random.fold_in(key, i)
            x, _ = self.decoder_layer.apply(
                params["layers"][str(i)], {}, x, memory, tgt_mask=tgt_mask,
                memory_mask=memory_mask, tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                memory_is_causal=memory_is_causal, train=training, key=k,
            )  # fmt: skip
        return self._finish(params, x), state


@register(name="nn.Transformer")
class Transformer(Module):
    """Encoder-decoder transformer, as ``torch.nn.Transformer`` (same arguments and defaults).

    Builds ``encoder = TransformerEncoder(layer, num_encoder_layers, LayerNorm(d_model))`` and
    ``decoder`` likewise (or uses ``custom_encoder``/``custom_decoder``). Keys:
    ``encoder.layers.0.self_attn.in_proj_weight``, ..., ``encoder.norm.weight``,
    ``decoder.layers.0.multihead_attn.out_proj.weight``, ..., ``decoder.norm.bias``. Fresh
    params as torch's: every param with 2 or more dims is xavier-uniform (so layers differ).

    Call: ``apply(params, state, src, tgt, *, src_mask=None, tgt_mask=None, memory_mask=None,
    src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
    src_is_causal=None, tgt_is_causal=None, memory_is_causal=False, train=False, key=None)``.
    Shapes: ``src (N, S, E)``, ``tgt (N, T, E)`` (``batch_first``; else sequence first) ->
    ``(N, T, E)``. :func:`generate_square_subsequent_mask` gives torch's causal ``tgt_mask``.

    Raises:
      ValueError: a bad hyperparameter, src/tgt with different batch sizes or feature sizes
        other than ``d_model``, training with ``dropout > 0`` and no ``key``, a traced ``train``.
    """

    d_model: int = 512
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    activation: str | Module = "relu"
    custom_encoder: Module | None = None
    custom_decoder: Module | None = None
    layer_norm_eps: float = 1e-5
    batch_first: bool = False
    norm_first: bool = False
    bias: bool = True
    encoder: Module = field(init=False, repr=False)
    decoder: Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        args = (self.d_model, self.nhead, self.dim_feedforward, self.dropout, self.activation,
                self.layer_norm_eps, self.batch_first, self.norm_first, self.bias)  # fmt: skip
        norm = LayerNorm(self.d_model, eps=self.layer_norm_eps, bias=self.bias)
        enc = self.custom_encoder
        if enc is None:
            enc = TransformerEncoder(TransformerEncoderLayer(*args), self.num_encoder_layers, norm)
        dec = self.custom_decoder
        if dec is None:
            dec = TransformerDecoder(TransformerDecoderLayer(*args), self.num_decoder_layers, norm)
        object.__setattr__(self, "encoder", enc)
        object.__setattr__(self, "decoder", dec)

    def children(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    def init(self, key: jax.Array) -> tuple[Params, State]:
        k_children, k_xavier = jax.random.split(key)
        params, state = super().init(k_children)
        counter = iter(range(1 << 30))

        def xavier(tree: Any) -> Any:  # torch's _reset_parameters: every p with p.dim() > 1
            if isinstance(tree, dict):  # rebuilt in place of jax.tree.map, which sorts dict keys
                return {k: xavier(v) for k, v in tree.items()}
            if tree.ndim > 1:
                return initializers.xavier_uniform(jax.random.fold_in(k_xavier, next(counter)), tree.shape)
            return tree

        return xavier(params), state

    def apply(  # type: ignore[override]
        self, params: Params, state: State, src: Any, tgt: Any, *, src_mask: Any = None,
        tgt_mask: Any = None, memory_mask: Any = None, src_key_padding_mask: Any = None,
        tgt_key_padding_mask: Any = None, memory_key_padding_mask: Any = None,
        src_is_causal: bool | None = None, tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False, train: bool = False, key: Key = None,
    ) -> Output:  # fmt: skip
        batch = 0 if self.batch_first else 1
        check(
            src.ndim != 3 or src.shape[batch] == tgt.shape[batch],
            self,
            f"the batch sizes of src {src.shape} and tgt {tgt.shape} must be equal (axis {batch}).",
        )
        check(
            src.shape[-1] == self.d_model and tgt.shape[-1] == self.d_model,
            self,
            f"the feature sizes of src {src.shape} and tgt {tgt.shape} must equal d_model = {self.d_model}.",
        )
        training = is_training(self, train)
        k_enc, k_dec = dropout_keys(key, training, 2)
        encoder: Any = self.encoder  # a TransformerEncoder or a custom one with its call
        decoder: Any = self.decoder
        memory, _ = encoder.apply(
            params["encoder"], {}, src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
            is_causal=src_is_causal, train=training, key=k_enc,
        )  # fmt: skip
        out, _ = decoder.apply(
            params["decoder"], {}, tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal, train=training, key=k_dec,
        )  # fmt: skip
        return out, state

    @staticmethod
    def generate_square_subsequent_mask(sz: int, dtype: Any = jnp.float32) -> jax.Array:
        """torch's ``Transformer.generate_square_subsequent_mask``: see the module function."""
        return generate_square_subsequent_mask(sz, dtype)
