from jaxnets.interop.flax_linen import linen_state_dict, load_linen_state_dict
from jaxnets.interop.flax_nnx import load_nnx_state_dict, nnx_state_dict
