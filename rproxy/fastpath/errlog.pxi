# What messages are made of, below every other area: which error log a
# message about a connection, an exchange or a downstream goes to (the
# vhost's, else the server's, else the worker's: `logging { error { } }`),
# and a peer's address as text (for logs and X-Forwarded-For).  Areas low in
# the stack (tls, bodybuf, limits) log through these without calling up into
# accesslog.pxi or http.pxi.

# ---- error log routing ---------------------------------------------------------

cdef inline int ds_errfd(DownstreamRt* ds) noexcept nogil:
    """A downstream's error log: its server's (logging { error { } }), else the worker's."""
    return ds.errfd if ds.errfd > 0 else g_errfd


cdef inline int x_errfd(Exchange* x) noexcept nogil:
    """Errors about a request: its vhost's error log, else its server's, else the worker's."""
    if x.rule != NULL and x.rule.vhost.errfd > 0:
        return x.rule.vhost.errfd
    if x.uc != NULL and x.uc.srv != NULL and x.uc.srv.errfd > 0:
        return x.uc.srv.errfd
    return g_errfd


cdef inline int uc_errfd(UConn* uc) noexcept nogil:
    if uc.xhead != NULL:
        return x_errfd(uc.xhead)
    return uc.srv.errfd if uc.srv.errfd > 0 else g_errfd


# ---- addresses ---------------------------------------------------------------

cdef int peer_format(Peer* p, char* out, int cap) noexcept nogil:
    """The client's address as text (no port), for X-Forwarded-For and logs."""
    if p.family == AF_INET:
        if inet_ntop(AF_INET, p.addr, out, cap) != NULL:
            return <int>strlen(out)
    elif p.family == AF_INET6:
        if inet_ntop(AF_INET6, p.addr, out, cap) != NULL:
            return <int>strlen(out)
    elif p.family == AF_UNIX:
        memcpy(out, b"unix:", 5)
        return 5
    out[0] = c'-'
    return 1
