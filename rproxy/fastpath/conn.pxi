# The connection core (Conn, defs.pxi): what a client connection and a
# downstream connection do the same way.  Reading into the read buffer,
# writing the pending output, closing.  The side-specific parts (what a read
# means, whom a write failure concerns) stay with their callers:
# upstream.pxi, downstream.pxi, tunnel.pxi.

cdef int conn_send(Conn* c, uint32_t* moved) noexcept nogil:
    """Write a connection's pending output.  0: all out; 1: the socket is
    full (CN_WRITABLE cleared: wait for EPOLLOUT); -1: the peer is gone
    (errno set).  *moved: the bytes written, for the caller's accounting."""
    cdef uint32_t before = c.out.hlen + c.out.blen
    cdef int r
    if c.flags & CN_VIRTUAL:
        r = h2_vsend(<UConn*>c)     # an HTTP/2 stream: the response goes to nghttp2 (h2.pxi)
    else:
        r = conn_flush(&c.out, c.h.fd, c.tls)
    moved[0] = before - (c.out.hlen + c.out.blen)
    if r > 0:
        c.flags &= ~CN_WRITABLE
    return r


cdef ssize_t conn_read(Conn* c, uint32_t room, bint raw) noexcept nogil:
    """Read at most room bytes at the end of a connection's read buffer
    (rend moves on).  >0: the count; 0: EOF; -1: errno says (EAGAIN: drained).
    CN_READABLE is cleared once the socket is known to be drained (a short
    plain read without a FIN, EOF, an error).  raw: read past TLS (a
    lingering close discards the bytes)."""
    cdef ssize_t n
    if c.flags & CN_VIRTUAL:
        return h2_vread(<UConn*>c, room)    # an HTTP/2 stream: its request bytes (h2.pxi)
    while True:
        if raw or c.tls == NULL:
            n = recv(c.h.fd, bdata(c.rbuf) + c.rend, room, 0)
        else:
            n = tls_recv(c.tls, bdata(c.rbuf) + c.rend, room)
        if n > 0:
            if <uint32_t>n < room and not (c.flags & CN_RDHUP) and c.tls == NULL:
                c.flags &= ~CN_READABLE    # drained (edge-triggered); a FIN would keep it set
            c.rend += <uint32_t>n
            return n
        if n < 0 and errno == EINTR:
            continue
        c.flags &= ~CN_READABLE
        return n


cdef void conn_shift(Conn* c, uint32_t d) noexcept nogil:
    """Drop the first d bytes of the read buffer: the rest moves down, and
    rpos and fpos with it.  The caller moves the spans it recorded
    (headers_shift)."""
    cdef char* base = bdata(c.rbuf)
    memmove(base, base + d, c.rend - d)
    c.rend -= d
    c.rpos -= d
    c.fpos = c.fpos - d if c.fpos >= d else 0


cdef void headers_shift(Header* hs, int n, uint32_t d) noexcept nogil:
    """The read buffer moved down by d bytes: so do these headers' spans."""
    cdef int i
    for i in range(n):
        hs[i].name.off -= d
        hs[i].value.off -= d


cdef void conn_release(Conn* c) noexcept nogil:
    """Close the socket and give back what the connection holds: its TLS
    state, read buffer, pending output and timer.  A caller that keeps
    something of its TLS state (a downstream's session) releases it first."""
    if c.tls != NULL:
        tls_free(c.tls)
        c.tls = NULL
    if c.h.fd >= 0:
        close(c.h.fd)
        c.h.fd = -1
    if c.rbuf != NULL:
        buf_put(c.rbuf)
        c.rbuf = NULL
    out_release(&c.out)
    timer_stop(&c.timer)
