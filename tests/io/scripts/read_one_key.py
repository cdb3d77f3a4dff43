"""Reads one key of a jaxnets file in a fresh process; prints peak RSS (bytes) and the value.

Usage: read_one_key.py FILE KEY
"""

import resource
import sys

import jaxnets

path, key = sys.argv[1:3]
with jaxnets.open(path) as reader:
    value = reader[key]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(value.tolist())
