"""flax and equinox models in, PyTorch layouts out (and back): see docs/compatibility.md.

flax and equinox are optional (``pip install 'jaxnets[flax]'`` / ``'jaxnets[equinox]'``) and
imported only when one of these functions runs.
"""

from jaxnets.interop.equinox import eqx_state_dict, load_eqx_state_dict
from jaxnets.interop.flax_linen import linen_state_dict, load_linen_state_dict
from jaxnets.interop.flax_nnx import load_nnx_state_dict, nnx_state_dict

__all__ = [
    "eqx_state_dict",
    "linen_state_dict",
    "load_eqx_state_dict",
    "load_linen_state_dict",
    "load_nnx_state_dict",
    "nnx_state_dict",
]
