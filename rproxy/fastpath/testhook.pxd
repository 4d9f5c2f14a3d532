# Area `testhook` (testhook.pxi). Hooks for tests and micro-benchmarks into the request glue, without
# sockets.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).
