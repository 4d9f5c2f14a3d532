# Fixed-size I/O buffers from a per-worker free list.  Taken only while bytes
# are in flight; an idle keep-alive connection holds none.

cdef inline char* bdata(Buf* b) noexcept nogil:
    return <char*>(b + 1)


# ---- free lists: items kept for reuse, linked through their first field ----

cdef inline void* freelist_pop(FreeList* fl) noexcept nogil:
    """An item kept for reuse, or NULL."""
    cdef void** item = <void**>fl.head
    if item != NULL:
        fl.head = item[0]
        fl.n -= 1
    return item


cdef inline bint freelist_push(FreeList* fl, void* item) noexcept nogil:
    """Keep item for reuse; False when the list is full (the caller frees it)."""
    if fl.n >= fl.cap:
        return False
    (<void**>item)[0] = fl.head
    fl.head = item
    fl.n += 1
    return True


cdef Buf* buf_get() noexcept nogil:
    global c_bufs_out
    cdef Buf* b = <Buf*>freelist_pop(&g_free_bufs)
    if b == NULL:
        b = <Buf*>malloc(sizeof(Buf) + g_buf_size)
        if b == NULL:
            return NULL
        b.cap = g_buf_size
    b.next = NULL
    c_bufs_out += 1
    return b


cdef void buf_put(Buf* b) noexcept nogil:
    global c_bufs_out
    if b == NULL:
        return
    c_bufs_out -= 1
    if not freelist_push(&g_free_bufs, b):
        free(b)


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


cdef void out_advance(Out* o, size_t k) noexcept nogil:
    """k bytes of o were written: head first, then body; a segment's owned
    buffer goes back to the pool once it is all out."""
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
            return
    if k:
        o.bptr += k
        o.blen -= <uint32_t>k
    if o.blen == 0 and o.bbuf != NULL:
        buf_put(o.bbuf)
        o.bbuf = NULL


cdef int out_flush(Out* o, int fd) noexcept nogil:
    """Write what is pending.  0: all written; 1: the socket is full (wait for
    EPOLLOUT); -1: the peer is gone (errno set)."""
    cdef iovec iov[2]
    cdef int cnt
    cdef ssize_t n
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
        out_advance(o, <size_t>n)
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
