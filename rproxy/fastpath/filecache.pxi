# The open-file cache of static files (issue 20, `open-file-cache`,
# `open-file-cache-valid`): per worker and per rule with a `root`, at most
# `size` regular files kept open, keyed by the confined relative path
# (static_path's output) under the rule's root fd.  A hit hands out a dup of
# the cached fd (every read uses an explicit offset: sendfile with an offset,
# pread), so evicting an entry never disturbs a transfer in flight.
#
# An entry is used as is for `valid` ms after its last check; then the path
# is opened again through sf_open (the same openat2 confinement as a miss)
# and compared by device, inode, size, mtime and ctime: the same file keeps
# its entry, a replaced one takes the new fd, a vanished one drops the entry
# and the request goes on as a miss (404 or try-files).  LRU eviction closes
# the fd.  Only regular files are cached; directories, index files and
# errors are not.

cdef extern from "<fcntl.h>" nogil:
    enum:
        F_DUPFD_CLOEXEC

cdef struct OfcEntry:
    char* path              # NULL = free slot
    uint32_t plen
    uint32_t hash
    int fd
    int32_t hnext           # bucket chain
    int32_t prev            # LRU list: head = most recent
    int32_t next
    int64_t checked         # g_now (ms) of the last check
    stat_t sb

cdef struct OpenFileCache:
    OfcEntry* e
    int32_t* buckets        # nbuckets heads, -1 = empty
    uint32_t bmask
    int32_t cap
    int32_t n
    int32_t head
    int32_t tail
    int32_t free_head       # free slots, chained through next
    int64_t valid_ms


cdef inline void ofc_unlink_lru(OpenFileCache* c, int32_t i) noexcept nogil:
    cdef OfcEntry* e = &c.e[i]
    if e.prev >= 0:
        c.e[e.prev].next = e.next
    else:
        c.head = e.next
    if e.next >= 0:
        c.e[e.next].prev = e.prev
    else:
        c.tail = e.prev


cdef inline void ofc_push_front(OpenFileCache* c, int32_t i) noexcept nogil:
    c.e[i].prev = -1
    c.e[i].next = c.head
    if c.head >= 0:
        c.e[c.head].prev = i
    c.head = i
    if c.tail < 0:
        c.tail = i


cdef void ofc_drop(OpenFileCache* c, int32_t i) noexcept nogil:
    """Remove entry i: off its chain and the LRU list, fd closed, slot freed."""
    cdef OfcEntry* e = &c.e[i]
    cdef int32_t* link = &c.buckets[e.hash & c.bmask]
    while link[0] != i:
        link = &c.e[link[0]].hnext
    link[0] = e.hnext
    ofc_unlink_lru(c, i)
    close(e.fd)
    free(e.path)
    e.path = NULL
    e.fd = -1
    e.next = c.free_head
    c.free_head = i
    c.n -= 1


cdef int32_t ofc_find(OpenFileCache* c, const char* rel, uint32_t rlen, uint32_t h) noexcept nogil:
    cdef int32_t i = c.buckets[h & c.bmask]
    while i >= 0:
        if c.e[i].hash == h and c.e[i].plen == rlen and memcmp(c.e[i].path, rel, rlen) == 0:
            return i
        i = c.e[i].hnext
    return -1


cdef void ofc_insert(OpenFileCache* c, const char* rel, uint32_t rlen, uint32_t h, int fd,
                     stat_t* sb) noexcept nogil:
    """Keep fd (the cache owns it from here; closed if it cannot be kept)."""
    cdef int32_t i
    cdef OfcEntry* e
    cdef char* path = <char*>malloc(rlen + 1)
    if path == NULL:
        close(fd)
        return
    if c.free_head < 0:
        ofc_drop(c, c.tail)             # the least recently used goes
    i = c.free_head
    e = &c.e[i]
    c.free_head = e.next
    memcpy(path, rel, rlen)
    path[rlen] = 0
    e.path = path
    e.plen = rlen
    e.hash = h
    e.fd = fd
    e.checked = g_now
    memcpy(&e.sb, sb, sizeof(stat_t))
    e.hnext = c.buckets[h & c.bmask]
    c.buckets[h & c.bmask] = i
    ofc_push_front(c, i)
    c.n += 1


cdef inline bint ofc_same(stat_t* a, stat_t* b) noexcept nogil:
    return (a.st_ino == b.st_ino and a.st_dev == b.st_dev and a.st_size == b.st_size
            and a.st_mtime == b.st_mtime and a.st_ctime == b.st_ctime)


cdef int ofc_open(EdgeRule* er, const char* rel, uint32_t rlen, stat_t* sb, int* err) noexcept nogil:
    """sf_open(root, rel) + fstat through the cache.  Returns an fd the
    caller owns with *sb filled; -1: the open failed (*err: its errno);
    -2: fstat failed."""
    cdef OpenFileCache* c = er.ofc
    cdef uint32_t h = 0
    cdef int32_t i = -1
    cdef int fd, dfd
    if c != NULL:
        h = mime_hash(rel, rlen)
        i = ofc_find(c, rel, rlen, h)
        if i >= 0 and g_now - c.e[i].checked < c.valid_ms:
            dfd = fcntl(c.e[i].fd, F_DUPFD_CLOEXEC, 0)
            if dfd >= 0:
                ofc_unlink_lru(c, i)
                ofc_push_front(c, i)
                memcpy(sb, &c.e[i].sb, sizeof(stat_t))
                return dfd
    fd = sf_open(er.rootfd, rel, O_RDONLY)
    if fd < 0:
        err[0] = errno
        if c != NULL and i >= 0:
            ofc_drop(c, i)              # gone (or no longer reachable): forget it
        return -1
    if fstat(fd, sb) != 0:
        close(fd)
        if c != NULL and i >= 0:
            ofc_drop(c, i)
        return -2
    if c == NULL:
        return fd
    if i >= 0:
        if S_ISREG(sb.st_mode) and ofc_same(sb, &c.e[i].sb):
            c.e[i].checked = g_now      # still the same file: keep the entry's fd
            ofc_unlink_lru(c, i)
            ofc_push_front(c, i)
            return fd
        ofc_drop(c, i)
    if S_ISREG(sb.st_mode):
        dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        if dfd >= 0:
            ofc_insert(c, rel, rlen, h, dfd, sb)
    return fd
