# Config-time helpers every area's set-up code uses (Python values to C
# strings), below every area so that none calls up into worker.pxi for them.
# They hold the GIL: start-up only, never per request.

cdef void _copy_cstr(char* dst, size_t cap, bytes src):
    cdef size_t n = len(src)
    if n >= cap:
        n = cap - 1
    memcpy(dst, <const char*>src, n)
    dst[n] = 0


cdef char* _dup(bytes src) except NULL:
    cdef size_t n = len(src)
    cdef char* p = <char*>malloc(n + 1)
    if p == NULL:
        raise MemoryError()
    memcpy(p, <const char*>src, n)
    p[n] = 0
    return p
