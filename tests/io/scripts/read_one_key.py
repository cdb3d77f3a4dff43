"""Reads one key of a jaxnets file in a fresh process; prints peak RSS (bytes) and the value.

Usage: read_one_key.py FILE KEY
"""

import resource
import sys

import jaxnets

path, key = sys.argv[1:3]
with jaxnets.open(path) as reader:
    value = reader[key]
# VmHWM is this process's own peak; ru_maxrss on Linux also counts the parent's RSS at fork.
try:
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(peak)
print(value.tolist())
