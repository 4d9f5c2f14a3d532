# The worker's control pipe: how Python threads of the worker (the
# resolver) hand results to the loop without touching its state while it
# runs.  Fixed-size records; the loop applies them between events.

cdef enum:
    CTL_SET_ADDRESS = 1     # index, family, sockaddr: used by the next connects
    CTL_TLS_STORE = 2       # index = context slot, addr = X509_STORE* (CRL reload, tls.pxi)
    CTL_TLS_CTX = 3         # index = server << 16 | vhost, addr = SSL_CTX* (acme.pxi: a renewed certificate)
    CTL_ACME_HTTP = 4       # index = add/remove, addr = TOKEN.THUMBPRINT (acme.pxi: HTTP-01)
    CTL_ACME_TLS = 5        # index = add/remove, addr = SSL_CTX* + name (acme.pxi: TLS-ALPN-01)

cdef struct ControlRecord:
    uint32_t type
    uint32_t index
    uint32_t family
    uint32_t addrlen
    uint8_t addr[128]

cdef Handle g_control_handle
cdef int g_control_rfd = -1
cdef int g_control_wfd = -1
cdef int g_resolve_wfd = -1         # the loop -> resolver thread: "re-resolve downstream N"


cdef void control_read() noexcept nogil:
    cdef ControlRecord rec
    cdef DownstreamRt* ds
    while read(g_control_rfd, &rec, sizeof(rec)) == sizeof(rec):
        if rec.type == CTL_SET_ADDRESS and rec.index < <uint32_t>g_ndownstreams and rec.addrlen <= 128:
            ds = &g_downstreams[rec.index]
            if ds.addrlen != rec.addrlen or memcmp(ds.addr, rec.addr, rec.addrlen) != 0:
                memcpy(ds.addr, rec.addr, rec.addrlen)
                ds.addrlen = rec.addrlen
                ds.family = rec.family
                rp_elog(ds_errfd(ds), 5, "downstream %s (%s): address re-resolved", ds.name, ds.label)
        elif rec.type == CTL_TLS_STORE:
            tls_apply_store(rec.index, (<void**>rec.addr)[0])
        elif rec.type == CTL_TLS_CTX:
            acme_set_ctx(rec.index, (<void**>rec.addr)[0])
        elif rec.type == CTL_ACME_HTTP and rec.addrlen <= 128:
            acme_http_set(rec.index != 0, rec.addr, rec.addrlen)
        elif rec.type == CTL_ACME_TLS and rec.addrlen <= 128:
            acme_tls_set(rec.index != 0, rec.addr, rec.addrlen)


cdef void resolve_request(DownstreamRt* ds) noexcept nogil:
    cdef uint32_t i = <uint32_t>ds.index
    if g_resolve_wfd >= 0:
        write(g_resolve_wfd, &i, sizeof(i))    # a full pipe just drops the request: fine
