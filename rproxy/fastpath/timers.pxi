# One binary min-heap of timers per loop.  Re-arming a timer to a LATER
# deadline (the common case: every byte from a client pushes its idle timeout
# out) costs no heap work: the entry fires at its old key, sees that `when`
# moved, and is re-filed.  Arming EARLIER sifts up; disarming removes.

cdef inline void _heap_swap(int i, int j) noexcept nogil:
    cdef Timer* a = g_heap[i]
    g_heap[i] = g_heap[j]
    g_heap[j] = a
    g_heap[i].idx = i
    g_heap[j].idx = j


cdef void _sift_up(int i) noexcept nogil:
    cdef int parent
    while i > 0:
        parent = (i - 1) >> 1
        if g_heap[parent].key <= g_heap[i].key:
            break
        _heap_swap(i, parent)
        i = parent


cdef void _sift_down(int i) noexcept nogil:
    cdef int l, r, m
    while True:
        l = 2 * i + 1
        r = l + 1
        m = i
        if l < g_heap_len and g_heap[l].key < g_heap[m].key:
            m = l
        if r < g_heap_len and g_heap[r].key < g_heap[m].key:
            m = r
        if m == i:
            break
        _heap_swap(i, m)
        i = m


cdef int _heap_push(Timer* t) noexcept nogil:
    global g_heap, g_heap_cap, g_heap_len
    cdef Timer** grown
    if g_heap_len == g_heap_cap:
        grown = <Timer**>realloc(g_heap, sizeof(Timer*) * (g_heap_cap * 2 + 64))
        if grown == NULL:
            return -1
        g_heap = grown
        g_heap_cap = g_heap_cap * 2 + 64
    t.key = t.when
    t.idx = g_heap_len
    g_heap[g_heap_len] = t
    g_heap_len += 1
    _sift_up(t.idx)
    return 0


cdef void _heap_remove(Timer* t) noexcept nogil:
    global g_heap_len
    cdef int i = t.idx
    cdef Timer* moved
    if i < 0:
        return
    g_heap_len -= 1
    if i != g_heap_len:
        moved = g_heap[g_heap_len]
        g_heap[i] = moved
        moved.idx = i
        _sift_down(i)
        _sift_up(moved.idx)
    t.idx = -1


cdef inline void timer_init(Timer* t, uint8_t kind, void* owner) noexcept nogil:
    t.when = 0
    t.key = 0
    t.idx = -1
    t.kind = kind
    t.owner = owner


cdef void timer_arm(Timer* t, int64_t after_ms) noexcept nogil:
    """(Re)arm to fire `after_ms` from now; <= 0 disarms."""
    if after_ms <= 0:
        timer_stop(t)
        return
    t.when = g_now + after_ms
    if t.idx < 0:
        _heap_push(t)
    elif t.when < t.key:
        t.key = t.when
        _sift_up(t.idx)


cdef inline void timer_stop(Timer* t) noexcept nogil:
    t.when = 0
    if t.idx >= 0:
        _heap_remove(t)


cdef int timers_next_ms() noexcept nogil:
    """epoll_wait timeout: ms until the earliest entry, -1 for none."""
    if g_heap_len == 0:
        return -1
    cdef int64_t d = g_heap[0].key - g_now
    if d <= 0:
        return 0
    if d > 60000:
        return 60000
    return <int>d


cdef Timer* timers_due() noexcept nogil:
    """The next timer due now, taken off the heap (NULL: none).  The caller
    (loop.pxi) fires it: the heap knows nothing of what its timers are for."""
    cdef Timer* t
    while g_heap_len > 0 and g_heap[0].key <= g_now:
        t = g_heap[0]
        if t.when > t.key:          # pushed later since it was filed: re-file
            t.key = t.when
            _sift_down(0)
            continue
        _heap_remove(t)
        t.when = 0
        return t
    return NULL
