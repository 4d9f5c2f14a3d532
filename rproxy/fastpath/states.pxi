# States as data (h11 style): the moves each state machine may make, as
# (from, to) pairs, and the one function per machine that moves it.
#
# Three machines: a client connection (UConn, U_*), a downstream connection
# (DConn, D_*) and the response read on a downstream connection
# (DConn.phase, R_*); defs.pxi says what each state means.  Setting the
# state a machine is already in is not a move and always allowed.  A build
# with RPROXY_CHECK_STATES (setup.py: the sanitizer build, or
# RPROXY_CHECK_STATES=1) checks every move against its table and aborts with
# a message on one the table does not list; other builds only assign.
# state_tables() hands the tables to the unit tests (tests/unit/test_states.py).

cdef extern from *:
    """
    #ifndef RPROXY_CHECK_STATES
    #define RPROXY_CHECK_STATES 0
    #endif
    """
    const int RPROXY_CHECK_STATES

cdef enum:
    CLIENT_NMOVES = 44
    DOWNSTREAM_NMOVES = 9
    RESPONSE_NMOVES = 6

# A client connection: a request head, then (routed) its body goes to a
# downstream or is read ahead, the response comes back, and the connection
# is kept (idle) or closed.  Any state before the response may answer with a
# response of rproxy's own (-> U_WAIT, or U_CLOSING to close after it); a
# request replayed after a failed attempt waits for a downstream again
# (-> U_PENDING) or is sent again at once (-> U_BODY).  An HTTP/2
# connection leaves these states for good (U_H2): each of its streams is a
# virtual connection of its own that moves through them (h2.pxi).
cdef uint8_t CLIENT_MOVES[88]
CLIENT_MOVES[:] = [
    U_IDLE, U_HEAD,
    U_IDLE, U_WAIT,
    U_IDLE, U_CLOSING,
    U_IDLE, U_LINGER,
    U_IDLE, U_CLOSED,
    U_HEAD, U_PENDING,
    U_HEAD, U_BUFFER,
    U_HEAD, U_BODY,
    U_HEAD, U_WAIT,
    U_HEAD, U_CLOSING,
    U_HEAD, U_TUNNEL,
    U_HEAD, U_LINGER,
    U_HEAD, U_CLOSED,
    U_BUFFER, U_PENDING,
    U_BUFFER, U_BODY,
    U_BUFFER, U_WAIT,
    U_BUFFER, U_CLOSING,
    U_BUFFER, U_LINGER,
    U_BUFFER, U_CLOSED,
    U_PENDING, U_BODY,
    U_PENDING, U_WAIT,
    U_PENDING, U_CLOSING,
    U_PENDING, U_TUNNEL,
    U_PENDING, U_LINGER,
    U_PENDING, U_CLOSED,
    U_BODY, U_PENDING,
    U_BODY, U_WAIT,
    U_BODY, U_CLOSING,
    U_BODY, U_TUNNEL,
    U_BODY, U_LINGER,
    U_BODY, U_CLOSED,
    U_WAIT, U_IDLE,
    U_WAIT, U_BODY,
    U_WAIT, U_PENDING,
    U_WAIT, U_CLOSING,
    U_WAIT, U_TUNNEL,
    U_WAIT, U_LINGER,
    U_WAIT, U_CLOSED,
    U_TUNNEL, U_CLOSED,
    U_CLOSING, U_LINGER,
    U_CLOSING, U_CLOSED,
    U_LINGER, U_CLOSED,
    U_IDLE, U_H2,           # ALPN h2 after the handshake, or the h2c preface (h2.pxi)
    U_H2, U_CLOSED,
]

# A downstream connection of a pool (or a tunnel's own, born D_DOWN).
cdef uint8_t DOWNSTREAM_MOVES[18]
DOWNSTREAM_MOVES[:] = [
    D_DOWN, D_CONNECTING,
    D_DOWN, D_ACTIVE,
    D_CONNECTING, D_IDLE,
    D_CONNECTING, D_ACTIVE,
    D_CONNECTING, D_DOWN,
    D_IDLE, D_ACTIVE,
    D_IDLE, D_DOWN,
    D_ACTIVE, D_IDLE,
    D_ACTIVE, D_DOWN,
]

# The response read on a downstream connection: an interim 1xx head goes
# back to R_HEAD; a pipelined connection starts the next response's head
# after the last one's body (R_BODY -> R_HEAD when a close-delimited body
# is cut short is not a move: such a connection is torn down).
cdef uint8_t RESPONSE_MOVES[12]
RESPONSE_MOVES[:] = [
    R_HEAD, R_BODY,
    R_HEAD, R_DONE,
    R_HEAD, R_TUNNEL,
    R_BODY, R_DONE,
    R_BODY, R_HEAD,
    R_DONE, R_HEAD,
]

cdef const char* CLIENT_STATE_NAMES[U_NSTATES]
CLIENT_STATE_NAMES[:] = [b"idle", b"head", b"pending", b"body", b"wait", b"closing", b"tunnel", b"linger", b"buffer",
                         b"closed", b"h2"]
cdef const char* DOWNSTREAM_STATE_NAMES[D_NSTATES]
DOWNSTREAM_STATE_NAMES[:] = [b"down", b"connecting", b"idle", b"active"]
cdef const char* RESPONSE_PHASE_NAMES[R_NPHASES]
RESPONSE_PHASE_NAMES[:] = [b"head", b"body", b"done", b"tunnel"]


cdef bint state_move_allowed(const uint8_t* moves, int nmoves, uint8_t before, uint8_t after) noexcept nogil:
    cdef int i
    if before == after:
        return True
    for i in range(nmoves):
        if moves[2 * i] == before and moves[2 * i + 1] == after:
            return True
    return False


cdef void state_move_refused(const char* machine, const char** names, uint8_t before,
                             uint8_t after) noexcept nogil:
    rp_elog(2, 0, "rproxy: %s state %s -> %s is not in the state table (states.pxi): aborting",
            machine, names[before], names[after])
    if g_errfd > 2:
        rp_elog(g_errfd, 0, "%s state %s -> %s is not in the state table (states.pxi): aborting",
                machine, names[before], names[after])
    abort()


cdef inline void uc_move(UConn* uc, uint8_t after) noexcept nogil:
    """Move a client connection to state `after` (U_*).  U_CLOSED is final in
    every build: a closed connection's struct is freed at the end of the loop
    turn, so nothing may make it look alive again."""
    if RPROXY_CHECK_STATES:
        if not state_move_allowed(CLIENT_MOVES, CLIENT_NMOVES, uc.conn.state, after):
            state_move_refused("client connection", CLIENT_STATE_NAMES, uc.conn.state, after)
    if uc.conn.state != U_CLOSED:
        uc.conn.state = after


cdef inline void dc_move(DConn* dc, uint8_t after) noexcept nogil:
    """Move a downstream connection to state `after` (D_*)."""
    if RPROXY_CHECK_STATES:
        if not state_move_allowed(DOWNSTREAM_MOVES, DOWNSTREAM_NMOVES, dc.conn.state, after):
            state_move_refused("downstream connection", DOWNSTREAM_STATE_NAMES, dc.conn.state, after)
    dc.conn.state = after


cdef inline void dc_move_phase(DConn* dc, uint8_t after) noexcept nogil:
    """Move the response read on a downstream connection to phase `after` (R_*)."""
    if RPROXY_CHECK_STATES:
        if not state_move_allowed(RESPONSE_MOVES, RESPONSE_NMOVES, dc.phase, after):
            state_move_refused("response", RESPONSE_PHASE_NAMES, dc.phase, after)
    dc.phase = after


def _state_table(flat, names):
    states = [n.decode() for n in names]
    return states, [(states[flat[i]], states[flat[i + 1]]) for i in range(0, len(flat), 2)]


def state_tables():
    """The three tables, for the unit tests: {machine: (state names, [(from, to), ...])}."""
    cdef int i
    return {
        "client": _state_table([CLIENT_MOVES[i] for i in range(2 * CLIENT_NMOVES)],
                               [CLIENT_STATE_NAMES[i] for i in range(U_NSTATES)]),
        "downstream": _state_table([DOWNSTREAM_MOVES[i] for i in range(2 * DOWNSTREAM_NMOVES)],
                                   [DOWNSTREAM_STATE_NAMES[i] for i in range(D_NSTATES)]),
        "response": _state_table([RESPONSE_MOVES[i] for i in range(2 * RESPONSE_NMOVES)],
                                 [RESPONSE_PHASE_NAMES[i] for i in range(R_NPHASES)]),
    }


def state_checks_compiled():
    """True in a build that checks every state move (RPROXY_CHECK_STATES)."""
    return RPROXY_CHECK_STATES != 0
