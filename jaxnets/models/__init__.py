"""The model zoo: torchvision and transformers architectures with their exact state_dict keys.

Each model is written with ``jaxnets.nn`` layers and the module names of its reference, so the
reference's published weights load strictly in one call::

    model = jaxnets.models.resnet18()
    params, state = model.load_state_dict(torch_resnet18.state_dict())

``import jaxnets`` registers every class here, so a saved zoo model loads in a fresh process.

* torchvision: :func:`resnet18` ... :func:`resnet152` (:class:`ResNet`),
  :func:`mobilenet_v3_small`/:func:`mobilenet_v3_large` (:class:`MobileNetV3`),
  :func:`vit_b_16` ... (:class:`VisionTransformer`). Inputs NCHW, as in torch.
* transformers: :class:`BertModel`, :class:`GPT2Model` (config field names as ``BertConfig`` /
  ``GPT2Config``; GPT-2's projections are transformers' ``Conv1D``, stored ``(in, out)``).
"""

from jaxnets.models.bert import BertModel
from jaxnets.models.gpt2 import Conv1D, GPT2Model
from jaxnets.models.mobilenetv3 import MobileNetV3, mobilenet_v3_large, mobilenet_v3_small
from jaxnets.models.resnet import (
    ResNet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from jaxnets.models.vit import (
    VisionTransformer,
    vit_b_16,
    vit_b_32,
    vit_h_14,
    vit_l_16,
    vit_l_32,
)

__all__ = [
    "BertModel",
    "Conv1D",
    "GPT2Model",
    "MobileNetV3",
    "ResNet",
    "VisionTransformer",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "resnet101",
    "resnet152",
    "resnet18",
    "resnet34",
    "resnet50",
    "vit_b_16",
    "vit_b_32",
    "vit_h_14",
    "vit_l_16",
    "vit_l_32",
]
