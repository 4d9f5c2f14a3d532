# Area `worker` (worker.pxi). The Python-facing edge: the Worker class that builds the C tables from
# the config and runs the loop.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef int _lb_code(str name) except -1
