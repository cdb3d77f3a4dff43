"""PRNG implementation names as files store them, mapped to the names every jax in range accepts.

A typed key (``jax.random.key``) is stored as its uint32 ``key_data`` plus the name of its
implementation, and rebuilt with ``jax.random.wrap_key_data(data, impl=name)``. jax has spelled
that name two ways: up to about 0.4.30 ``str(jax.random.key_impl(k))`` gave the short tag that
also appears in the dtype (``'fry'`` for ``key<fry>``); later versions give the registered name
(``'threefry2x32'``), and ``wrap_key_data`` accepts only that. Readers pass every stored name
through :func:`canonical_impl` so that files written under either spelling load everywhere.
"""

from __future__ import annotations

from jaxnets.errors import JaxnetsError

__all__ = ["IMPLS", "canonical_impl"]

# The implementations jax ships, by the name jax.random.key(impl=...) accepts.
IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
# Old short tags (the dtype's ``key<tag>``) -> names.
_TAGS = {"fry": "threefry2x32", "rbg": "rbg", "urbg": "unsafe_rbg"}


def canonical_impl(name: str) -> str:
    """The name ``jax.random.wrap_key_data(impl=...)`` accepts for a stored PRNG impl name.

    Args:
      name: a name as written by any jax: ``"threefry2x32"``, ``"fry"``, ``"unsafe_rbg"``,
        ``"urbg"``, ``"rbg"``.

    Returns:
      One of :data:`IMPLS`.

    Raises:
      JaxnetsError: an unknown name (the caller adds the file and key).
    """
    if name in IMPLS:
        return name
    if isinstance(name, str) and name in _TAGS:
        return _TAGS[name]
    raise JaxnetsError(
        f"unknown PRNG implementation {name!r:.60}; known: {', '.join(IMPLS)} "
        f"(or the short tags {', '.join(_TAGS)} older jax wrote)."
    )
