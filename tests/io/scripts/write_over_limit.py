"""Saves over an existing file with a file-size limit (RLIMIT_FSIZE) below the new file's size.

The kernel then refuses the write with EFBIG, as a full disk refuses it with ENOSPC. Prints the
error as JSON: {"type", "is_oserror", "errno", "file", "message"}.

Usage: write_over_limit.py DEST LIMIT_BYTES
"""

import json
import resource
import signal
import sys

import numpy as np

import jaxnets

dest, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so the write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    jaxnets.save_state_dict(dest, {"big": np.zeros(4 * limit, np.uint8)})
except Exception as e:  # report whatever it is: the test checks the type
    print(json.dumps({"type": type(e).__name__, "is_oserror": isinstance(e, OSError),
                      "errno": getattr(e, "errno", None), "file": getattr(e, "file", None),
                      "message": str(e)}))  # fmt: skip
else:
    print(json.dumps({"type": None}))
