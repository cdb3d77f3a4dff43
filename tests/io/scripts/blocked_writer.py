"""Starts a save and blocks half-way through it, holding its temporary file (for tests of stale files).

Usage: blocked_writer.py DEST — prints "READY <temp file>" once the temporary file exists, then
sleeps until killed (at most 120 s).
"""

import os
import sys
import time

import numpy as np

from jaxnets.io import format as fmt

dest = sys.argv[1]
folder, name = os.path.split(os.path.abspath(dest))


def block() -> np.ndarray:
    tmp = [f for f in os.listdir(folder) if f.startswith(f".{name}.{os.getpid()}.")]
    print("READY", os.path.join(folder, tmp[0]), flush=True)
    time.sleep(120)
    raise SystemExit("not killed")


fmt.write_file(
    dest,
    [
        fmt.TensorSource("a", "model", "float32", (1024,), lambda: np.ones(1024, np.float32)),
        fmt.TensorSource("b", "model", "float32", (4,), block),
    ],
    {},
)
