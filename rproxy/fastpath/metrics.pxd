# Area `metrics` (metrics.pxi). Counters and gauges in the shared metrics zone: the m_* hooks every
# area calls when something happens.
#
# The cdef functions of this area that OTHER areas may call (tests/unit/test_seams.py
# keeps this list complete; Cython checks each line against its definition).

cdef void m_request_done(Exchange* x) noexcept nogil
cdef void m_accepted(ServerRt* srv) noexcept nogil
cdef void m_conn_open(ServerRt* srv) noexcept nogil
cdef void m_conn_closed(ServerRt* srv) noexcept nogil
cdef void m_tls_done(ServerRt* srv, bint resumed) noexcept nogil
cdef void m_tls_failed(ServerRt* srv) noexcept nogil
cdef void m_ds_failed(DConn* dc) noexcept nogil
cdef void m_replay(DownstreamRt* ds) noexcept nogil
cdef void m_ejection(DownstreamRt* ds) noexcept nogil
cdef void m_pend_timeout(Exchange* x) noexcept nogil
cdef void m_pend_rejected(Exchange* x) noexcept nogil
cdef void m_on_timer() noexcept nogil
cdef void m_start() noexcept nogil
cdef void m_h2_stream(ServerRt* srv) noexcept nogil
