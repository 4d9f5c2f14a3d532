# Area `cfgutil` (cfgutil.pxi). Config-time helpers (Python bytes to C strings) for every area's set-up
# code; they hold the GIL and never run per request.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef void _copy_cstr(char* dst, size_t cap, bytes src)
cdef char* _dup(bytes src) except NULL
