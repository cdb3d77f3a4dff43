"""tools/min_constraints.py as a module (tools/ is scripts, not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("min_constraints", ROOT / "tools" / "min_constraints.py")
assert _spec is not None and _spec.loader is not None
min_constraints = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(min_constraints)
