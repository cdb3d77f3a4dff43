"""The pytree-path core: one flattener (:mod:`.tree`), one checker (:mod:`.structure`), one
registry (:mod:`.registry`), and PyTorch's state_dict vocabulary on top (:mod:`.state_dict`)."""

from jaxnets.core.registry import from_config, lookup, register, registered_name, to_config
from jaxnets.core.state_dict import check_state_dict, load_state_dict, state_dict
from jaxnets.core.structure import LeafInfo, Mismatch, StructureReport, compare, leaf_info
from jaxnets.core.tree import flatten, join_key, map_with_keys, split_key, tree_from_spec, tree_spec

__all__ = [
    "LeafInfo",
    "Mismatch",
    "StructureReport",
    "check_state_dict",
    "compare",
    "flatten",
    "from_config",
    "join_key",
    "leaf_info",
    "load_state_dict",
    "lookup",
    "map_with_keys",
    "register",
    "registered_name",
    "split_key",
    "state_dict",
    "to_config",
    "tree_from_spec",
    "tree_spec",
]
