# Area `acme` (acme.pxi). ACME in the loop: certificate swaps, HTTP-01 and TLS-ALPN-01 answers.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef void acme_http_set(bint add, const uint8_t* data, uint32_t n) noexcept nogil
cdef void acme_tls_set(bint add, const uint8_t* data, uint32_t n) noexcept nogil
cdef void acme_set_ctx(uint32_t index, void* ctx) noexcept nogil
cdef int acme_alpn(void* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* inp,
                   unsigned int inlen) noexcept nogil
cdef bint acme_http_answer(UConn* uc, Exchange* x) noexcept nogil
