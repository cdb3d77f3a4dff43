"""Layers with PyTorch's names, arguments, defaults and parameter layouts (see :mod:`.module`)."""

from jaxnets.nn.activation import GELU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from jaxnets.nn.attention import MultiheadAttention
from jaxnets.nn.container import Sequential
from jaxnets.nn.conv import Conv1d, Conv2d, ConvTranspose2d
from jaxnets.nn.dropout import Dropout
from jaxnets.nn.embedding import Embedding
from jaxnets.nn.linear import Flatten, Identity, Linear
from jaxnets.nn.module import Bound, Buffer, Key, Module, Output, Parameter, Params, State
from jaxnets.nn.norm import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from jaxnets.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Bound",
    "Buffer",
    "Conv1d",
    "Conv2d",
    "ConvTranspose2d",
    "Dropout",
    "Embedding",
    "Flatten",
    "GELU",
    "GroupNorm",
    "Identity",
    "Key",
    "LayerNorm",
    "Linear",
    "LogSoftmax",
    "MaxPool2d",
    "Module",
    "Output",
    "MultiheadAttention",
    "Parameter",
    "Params",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "State",
    "Tanh",
]
