"""Migrations: files written by older versions of a registered layer are upgraded on load.

A model file stores ``versions``: ``{module path: [registered name, version]}`` for the model and
every registered sub-layer. When a class's registered ``version`` is newer than the file's, its
``upgrade(state_dict, from_version)`` function migrates that layer's flat sub-state_dict (keys
relative to the layer), children before parents (docs/custom_layers.md). :func:`jaxnets.load`
then checks the upgraded entries against the model, as it checks every file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from jaxnets.core import registry
from jaxnets.errors import FileFormatError, RegistryError

__all__ = ["Plan", "upgrade_plan", "upgrade"]

Plan: TypeAlias = "list[tuple[str, registry.RegistryEntry, int]]"


def upgrade_plan(versions: Any, file: str) -> Plan:
    """``[(module path, registry entry, stored version)]`` of the layers to upgrade, children first.

    Raises:
      FileFormatError: the ``versions`` map is malformed.
      RegistryError: a class is not registered, is newer in the file, or has no upgrade function.
    """
    if versions is None:
        return []
    if not isinstance(versions, dict) or not all(isinstance(p, str) for p in versions):
        raise FileFormatError(
            f"{file}: malformed class versions in the header (a map from module paths to "
            "[registered name, version] expected).",
            file=file,
        )
    plan = []
    # Children first, so a parent's upgrade sees its children already in their current layout.
    for path in sorted(versions, key=lambda p: (-p.count(".") if p else 1, p)):
        item = versions[path]
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and type(item[1]) is int
        ):
            raise FileFormatError(
                f"{file}: malformed class version entry at {path!r:.80} (expected [name, version]).",
                file=file,
            )
        name, stored = item
        entry = registry.lookup(name, file=file)
        if stored == entry.version:
            continue
        where = path or "the model"
        if stored > entry.version:
            raise RegistryError(
                f"{file}: {where} ({name}) was written by version {stored} of the class, this "
                f"process has version {entry.version}; load it with the newer code.",
                path=path,
                file=file,
            )
        if entry.upgrade is None:
            raise RegistryError(
                f"{file}: {where} ({name}) is version {stored} in the file, {entry.version} here, "
                f"and {name} has no upgrade function; register it with "
                f"@jaxnets.register(version={entry.version}, upgrade=fn).",
                path=path,
                file=file,
            )
        plan.append((path, entry, stored))
    return plan


def upgrade(flat: dict[str, Any], plan: Plan, file: str) -> dict[str, Any]:
    """Applies registered ``upgrade`` functions to the sub-state_dict of each older layer."""
    for path, entry, stored in plan:
        prefix = path + "." if path else ""
        sub = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        try:
            new = entry.upgrade(dict(sub), stored)  # type: ignore[misc]
        except Exception as e:  # the user's migration, run on this file's entries
            raise RegistryError(
                f"{file}: the upgrade function of {entry.name} failed on {path or 'the model'} "
                f"(from version {stored}): {type(e).__name__}: {e}",
                path=path,
                file=file,
            ) from e
        if not isinstance(new, Mapping) or not all(isinstance(k, str) for k in new):
            raise RegistryError(
                f"{file}: the upgrade function of {entry.name} must return a dict of str keys, "
                f"got {type(new).__name__}.",
                path=path,
                file=file,
            )
        flat = {k: v for k, v in flat.items() if not k.startswith(prefix)}
        flat.update({prefix + k: v for k, v in new.items()})
    return flat
