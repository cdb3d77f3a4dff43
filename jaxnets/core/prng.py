"""Typed PRNG keys in files: implementation names and key-data shapes, in one place.

A typed key (``jax.random.key``) is stored as its uint32 ``key_data`` plus the name of its
implementation, and rebuilt with ``jax.random.wrap_key_data(data, impl=name)``. jax has spelled
that name two ways: up to about 0.4.30 ``str(jax.random.key_impl(k))`` gave the short tag that
also appears in the dtype (``'fry'`` for ``key<fry>``); later versions give the registered name
(``'threefry2x32'``), and ``wrap_key_data`` accepts only that. Readers pass every stored name
through :func:`canonical_impl`, so files written under either spelling load everywhere.

The implementations every jax in the supported range ships are known here without importing jax
(reading a file's header stays cheap); newer ones (``philox4x32`` in jax >= 0.9) are looked up in
the running jax, so a file holding one loads wherever that jax runs and is refused, by name,
where it does not.
"""

from __future__ import annotations

import functools

from jaxnets.errors import JaxnetsError

__all__ = ["IMPLS", "canonical_impl", "key_info"]

# name -> (key dtype name, key-data shape of one key), for the impls of every jax in range.
_KNOWN: dict[str, tuple[str, tuple[int, ...]]] = {
    "threefry2x32": ("key<fry>", (2,)),
    "rbg": ("key<rbg>", (4,)),
    "unsafe_rbg": ("key<urbg>", (4,)),
}
IMPLS = tuple(_KNOWN)
# Old short tags (the dtype's ``key<tag>``) -> names.
_TAGS = {"fry": "threefry2x32", "rbg": "rbg", "urbg": "unsafe_rbg"}


def canonical_impl(name: str) -> str:
    """The name ``jax.random.wrap_key_data(impl=...)`` accepts for a stored PRNG impl name.

    Args:
      name: a name as written by any jax: ``"threefry2x32"``, ``"fry"``, ``"unsafe_rbg"``,
        ``"urbg"``, ``"rbg"``, or an implementation of the running jax (``"philox4x32"``).

    Raises:
      JaxnetsError: a name neither this table nor the running jax knows (the caller adds the
        file and key).
    """
    key_info(name)
    return _TAGS.get(name, name) if isinstance(name, str) else name


def key_info(name: str) -> tuple[str, tuple[int, ...]]:
    """``(key dtype name, key-data shape of one key)`` of an impl, e.g. ``("key<fry>", (2,))``.

    Raises:
      JaxnetsError: an implementation neither this table nor the running jax knows.
    """
    return _key_info(name if isinstance(name, str) else None)


@functools.lru_cache(maxsize=64)
def _key_info(name: str | None) -> tuple[str, tuple[int, ...]]:
    if name is not None:
        name = _TAGS.get(name, name)
        if name in _KNOWN:
            return _KNOWN[name]
        try:
            import jax  # only for implementations newer than the table

            k = jax.random.key(0, impl=name)
            return str(k.dtype), tuple(jax.random.key_data(k).shape)
        except Exception:  # jax raises ValueError/KeyError/TypeError for an unknown impl
            pass
    raise JaxnetsError(
        f"unknown PRNG implementation {name!r:.60}; known: {', '.join(IMPLS)} "
        f"(or the short tags {', '.join(_TAGS)} older jax wrote), and those of the running jax. "
        "A file may hold a key of an implementation only a newer jax has: load it with that jax."
    )
