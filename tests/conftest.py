"""Shared test setup. Tests run on CPU; a GPU is never required."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
