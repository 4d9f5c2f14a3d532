# Area `buffers` (buffers.pxi). Fixed-size I/O buffers from the per-worker free list, and Out, the
# pending output of a connection.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef struct W

cdef char* bdata(Buf* b) noexcept nogil
cdef Buf* buf_get() noexcept nogil
cdef void buf_put(Buf* b) noexcept nogil
cdef bint out_empty(Out* o) noexcept nogil
cdef void out_release(Out* o) noexcept nogil
cdef int out_flush(Out* o, int fd) noexcept nogil
cdef void w_put(W* w, const char* s, size_t n) noexcept nogil
cdef void w_str(W* w, const char* s) noexcept nogil
cdef void w_uint(W* w, uint64_t v) noexcept nogil
cdef void* freelist_pop(FreeList* fl) noexcept nogil
cdef bint freelist_push(FreeList* fl, void* item) noexcept nogil
cdef void out_advance(Out* o, size_t k) noexcept nogil
