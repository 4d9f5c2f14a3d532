# Area `bodybuf` (bodybuf.pxi). Bounded body buffering (memory, then a temp file) for request and
# response bodies.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef BodyBuf* bb_new(uint64_t mem_max, uint64_t file_max) noexcept nogil
cdef void bb_free(BodyBuf* bb) noexcept nogil
cdef uint64_t bb_len(BodyBuf* bb) noexcept nogil
cdef uint64_t bb_room(BodyBuf* bb) noexcept nogil
cdef int64_t bb_append(BodyBuf* bb, const char* p, uint32_t n) noexcept nogil
cdef int bb_take(BodyBuf* bb, Out* o) noexcept nogil
cdef bint rsp_wanted(DConn* dc, Exchange* x) noexcept nogil
cdef int rsp_queue(DConn* dc, UConn* uc) noexcept nogil
cdef int uc_pump(UConn* uc) noexcept nogil
cdef bint rsp_may_read(DConn* dc, UConn* uc) noexcept nogil
cdef void rsp_release(UConn* uc) noexcept nogil
cdef void rsp_resume(DConn* dc, UConn* uc) noexcept nogil
cdef bint req_buffer_wanted(UConn* uc, Exchange* x) noexcept nogil
cdef void req_buffer_start(UConn* uc) noexcept nogil
cdef void req_buffer_body(UConn* uc) noexcept nogil
cdef void req_buffer_failed(UConn* uc, const char* why) noexcept nogil
cdef bint req_spill(UConn* uc) noexcept nogil
cdef int rsp_splice_spill(DConn* dc) noexcept nogil
cdef int rsp_hand_on(DConn* dc, UConn* uc) noexcept nogil
