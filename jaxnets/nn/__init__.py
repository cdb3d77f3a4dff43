"""Layers with PyTorch's names, arguments, defaults and parameter layouts (see :mod:`.module`).

``jaxnets.nn.functional`` holds the stateless functions (``interpolate``, ...), as
``torch.nn.functional`` does. docs/layers.md maps every torch.nn layer to its jaxnets twin.
"""

from jaxnets.nn import functional
from jaxnets.nn.activation import (
    CELU,
    ELU,
    GELU,
    SELU,
    Hardshrink,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softplus,
    Softshrink,
    Softsign,
    Tanh,
    Tanhshrink,
    Threshold,
)
from jaxnets.nn.attention import MultiheadAttention
from jaxnets.nn.container import ModuleDict, Sequential
from jaxnets.nn.conv import Conv1d, Conv2d, Conv3d
from jaxnets.nn.conv_transpose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from jaxnets.nn.distance import CosineSimilarity, PairwiseDistance
from jaxnets.nn.dropout import Dropout, Dropout1d, Dropout2d, Dropout3d
from jaxnets.nn.embedding import Embedding
from jaxnets.nn.linear import Bilinear, Flatten, Identity, Linear, Unflatten
from jaxnets.nn.module import Bound, Buffer, Key, Module, Output, Parameter, Params, State
from jaxnets.nn.norm import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
)
from jaxnets.nn.norm_layer import GroupNorm, LayerNorm, LocalResponseNorm, RMSNorm
from jaxnets.nn.padding import (
    CircularPad1d,
    CircularPad2d,
    CircularPad3d,
    ConstantPad1d,
    ConstantPad2d,
    ConstantPad3d,
    ReflectionPad1d,
    ReflectionPad2d,
    ReflectionPad3d,
    ReplicationPad1d,
    ReplicationPad2d,
    ReplicationPad3d,
    ZeroPad1d,
    ZeroPad2d,
    ZeroPad3d,
)
from jaxnets.nn.pooling import AvgPool1d, AvgPool2d, AvgPool3d, MaxPool1d, MaxPool2d, MaxPool3d
from jaxnets.nn.pooling_adaptive import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
)
from jaxnets.nn.rnn import GRU, LSTM, RNN
from jaxnets.nn.rnn_cell import GRUCell, LSTMCell, RNNCell
from jaxnets.nn.softmax import GLU, LogSoftmax, Softmax, Softmax2d, Softmin
from jaxnets.nn.transformer import Transformer, TransformerDecoder, TransformerEncoder
from jaxnets.nn.transformer_layer import TransformerDecoderLayer, TransformerEncoderLayer
from jaxnets.nn.upsample import (
    ChannelShuffle,
    PixelShuffle,
    PixelUnshuffle,
    Upsample,
    UpsamplingBilinear2d,
    UpsamplingNearest2d,
)

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Bilinear", "Bound", "Buffer", "CELU", "ChannelShuffle",
    "CircularPad1d", "CircularPad2d", "CircularPad3d", "ConstantPad1d", "ConstantPad2d",
    "ConstantPad3d", "Conv1d", "Conv2d", "CosineSimilarity",
    "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Dropout", "Dropout1d",
    "Dropout2d", "Dropout3d", "ELU", "Embedding", "Flatten", "GELU", "GLU", "GRU", "GRUCell", "GroupNorm",
    "Hardshrink", "Hardsigmoid", "Hardswish", "Hardtanh", "Identity", "InstanceNorm1d",
    "InstanceNorm2d", "InstanceNorm3d", "Key", "LSTM", "LSTMCell", "LayerNorm", "LeakyReLU", "Linear",
    "LocalResponseNorm", "LogSigmoid", "LogSoftmax", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "Mish", "Module", "ModuleDict", "MultiheadAttention", "Output", "PReLU", "Parameter", "Params",
    "PairwiseDistance", "PixelShuffle", "PixelUnshuffle", "ReflectionPad1d", "ReflectionPad2d",
    "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d", "RMSNorm", "RNN", "RNNCell", "ReLU", "ReLU6", "SELU", "Sequential",
    "SiLU", "Sigmoid", "Softmax", "Softmax2d", "Softmin", "Softplus", "Softshrink", "Softsign",
    "State", "Tanh", "Tanhshrink", "Threshold", "Transformer", "TransformerDecoder",
    "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer", "Unflatten",
    "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d",
    "functional",
]  # fmt: skip
