# Fixed-size I/O buffers from a per-worker free list.  Taken only while bytes
# are in flight; an idle keep-alive connection holds none.

cdef inline char* bdata(Buf* b) noexcept nogil:
    return <char*>(b + 1)


cdef Buf* buf_get() noexcept nogil:
    global g_free_bufs, g_nfree_bufs, c_bufs_out
    cdef Buf* b = g_free_bufs
    if b != NULL:
        g_free_bufs = b.next
        g_nfree_bufs -= 1
    else:
        b = <Buf*>malloc(sizeof(Buf) + g_buf_size)
        if b == NULL:
            return NULL
        b.cap = g_buf_size
    b.next = NULL
    c_bufs_out += 1
    return b


cdef void buf_put(Buf* b) noexcept nogil:
    global g_free_bufs, g_nfree_bufs, c_bufs_out
    if b == NULL:
        return
    c_bufs_out -= 1
    if g_nfree_bufs >= g_max_free_bufs:
        free(b)
        return
    b.next = g_free_bufs
    g_free_bufs = b
    g_nfree_bufs += 1


# ---- Out: pending output of one direction ----------------------------------

cdef inline bint out_empty(Out* o) noexcept nogil:
    return o.hlen == 0 and o.blen == 0


cdef void out_release(Out* o) noexcept nogil:
    """Drop whatever is pending (on close), returning owned buffers."""
    if o.hbuf != NULL:
        buf_put(o.hbuf)
    if o.bbuf != NULL:
        buf_put(o.bbuf)
    memset(o, 0, sizeof(Out))


cdef int out_flush(Out* o, int fd) noexcept nogil:
    """Write what is pending.  0: all written; 1: the socket is full (wait for
    EPOLLOUT); -1: the peer is gone (errno set)."""
    cdef iovec iov[2]
    cdef int cnt
    cdef ssize_t n
    cdef size_t k
    while o.hlen or o.blen:
        cnt = 0
        if o.hlen:
            iov[cnt].iov_base = <void*>o.hptr
            iov[cnt].iov_len = o.hlen
            cnt += 1
        if o.blen:
            iov[cnt].iov_base = <void*>o.bptr
            iov[cnt].iov_len = o.blen
            cnt += 1
        if cnt == 1:
            n = send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
        else:
            n = writev(fd, iov, cnt)
        if n < 0:
            if errno == EINTR:
                continue
            if errno == EAGAIN:
                return 1
            return -1
        k = <size_t>n
        if o.hlen:
            if k >= o.hlen:
                k -= o.hlen
                o.hlen = 0
                if o.hbuf != NULL:
                    buf_put(o.hbuf)
                    o.hbuf = NULL
            else:
                o.hptr += k
                o.hlen -= <uint32_t>k
                return 1
        if k:
            o.bptr += k
            o.blen -= <uint32_t>k
        if o.blen == 0 and o.bbuf != NULL:
            buf_put(o.bbuf)
            o.bbuf = NULL
        if o.hlen or o.blen:
            return 1      # short write: the socket buffer is full
    return 0


# ---- a bounded writer for building heads -----------------------------------

cdef struct W:
    char* p
    char* end
    int overflow


cdef inline void w_put(W* w, const char* s, size_t n) noexcept nogil:
    if <size_t>(w.end - w.p) < n:
        w.overflow = 1
        return
    memcpy(w.p, s, n)
    w.p += n


cdef inline void w_str(W* w, const char* s) noexcept nogil:
    w_put(w, s, strlen(s))


cdef void w_uint(W* w, uint64_t v) noexcept nogil:
    cdef char tmp[24]
    cdef int i = 24
    if v == 0:
        w_put(w, "0", 1)
        return
    while v:
        i -= 1
        tmp[i] = <char>(48 + v % 10)
        v //= 10
    w_put(w, &tmp[i], 24 - i)
