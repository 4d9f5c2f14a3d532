# Area `tls` (tls.pxi). TLS in the loop: handshakes, reads and writes of client and downstream
# connections through OpenSSL.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef Tls* tls_new(void* ctx, int fd, bint server) noexcept nogil
cdef void tls_free(Tls* t) noexcept nogil
cdef int tls_error_text(Tls* t, char* out, int cap) noexcept nogil
cdef ssize_t tls_recv(Tls* t, char* buf, size_t n) noexcept nogil
cdef ssize_t conn_recv(int fd, Tls* t, char* buf, size_t n) noexcept nogil
cdef int conn_flush(Out* o, int fd, Tls* t) noexcept nogil
cdef void conn_shut_wr(int fd, Tls* t) noexcept nogil
cdef ssize_t conn_peek(int fd, Tls* t) noexcept nogil
cdef uint32_t tls_translate(Tls* t, uint32_t ev) noexcept nogil
cdef int tls_uc_start(UConn* uc) noexcept nogil
cdef int tls_uc_handshake(UConn* uc) noexcept nogil
cdef int tls_log_facts(UConn* uc, const char** proto, const char** cipher) noexcept nogil
cdef void tls_put_headers(W* w, Tls* t, uint64_t mask) noexcept nogil
cdef int tls_dc_start(DConn* dc) noexcept nogil
cdef int tls_dc_handshake(DConn* dc) noexcept nogil
cdef void tls_dc_release(DConn* dc) noexcept nogil
cdef void tls_apply_store(uint32_t slot, void* store) noexcept nogil
