# Constants and C structures of the fast path.
#
# Everything a request touches is a C struct: connections, exchanges, buffers,
# timers, pools.  Python objects exist only at the edges (the Worker class that
# builds these tables from the Config, and rare events handed back to Python).
#
# Ownership rules (the few that matter):
# - A connection's read buffer (`rbuf`) is taken from the per-worker buffer
#   pool only while bytes are in flight and handed back when it is empty.
# - Bytes read from one side are forwarded straight out of that side's read
#   buffer: the consumer's `Out` points into the producer's buffer, and the
#   producer does not read again until the consumer's `Out` has drained.  That
#   is the backpressure: at most one buffer of unsent data per direction.
# - An exchange (one request and its response) lives in a struct taken from a
#   free list when a request begins and returned when it ends.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t

cdef enum:
    # what an epoll registration points at (first field of every handle)
    K_LISTENER = 1
    K_UCONN = 2
    K_DCONN = 3
    K_SIGNAL = 4
    K_PROBE = 5
    K_CONTROL = 6
    K_REDIS = 7             # the rate limit store's connection (redis.pxi)

# The states below move only as the tables of states.pxi allow (uc_move,
# dc_move, dc_move_phase); a build with RPROXY_CHECK_STATES aborts on any other move.

cdef enum:
    # upstream (client) connection states
    U_IDLE = 0          # between requests (keep-alive)
    U_HEAD = 1          # reading a request head
    U_PENDING = 2       # head parsed, waiting for a downstream connection
    U_BODY = 3          # forwarding the request body
    U_WAIT = 4          # request forwarded; the response is in progress
    U_CLOSING = 5       # flushing the last bytes, then close
    U_TUNNEL = 6        # upgraded: raw bytes both ways
    U_LINGER = 7        # response sent, write side shut: discard input until EOF
    U_BUFFER = 8        # head routed; reading the whole body before taking a downstream (bodybuf.pxi)
    U_CLOSED = 9        # closed; freed at the end of the loop turn (events of this turn may still name it)
    U_H2 = 10           # an HTTP/2 connection: its streams are virtual client connections (h2.pxi)
    U_NSTATES = 11

cdef enum:
    # downstream (backend) connection states
    D_DOWN = 0          # no socket; a retry timer may be armed
    D_CONNECTING = 1
    D_IDLE = 2          # in its downstream's idle list
    D_ACTIVE = 3        # serving an exchange
    D_NSTATES = 4

cdef enum:
    # phases of the response read on a downstream connection (DConn.phase)
    R_HEAD = 0          # reading a response head (interim 1xx heads come back here)
    R_BODY = 1          # relaying its body
    R_DONE = 2          # the response ended
    R_TUNNEL = 3        # a tunnel's own connection: raw bytes, no more HTTP (tunnel.pxi)
    R_NPHASES = 4

cdef enum:
    # Conn.flags: the bits both sides share (relay, readiness, parser pauses)
    CN_READABLE = 0x01      # edge-triggered readiness we have not consumed yet
    CN_WRITABLE = 0x02
    CN_RDHUP = 0x04         # the peer half-closed (or is gone): read on until EOF
    CN_HEAD_DONE = 0x08     # parser paused at the end of a head
    CN_MSG_DONE = 0x10      # parser paused at the end of a message
    CN_TUN_EOF = 0x20       # tunnel: this side finished sending

cdef enum:
    # Conn.flags of a client connection (UConn), above the shared bits
    UF_CLOSE_AFTER = 0x40   # close once the current response is out
    UF_IN_LIST = 0x80
    UF_PP_WAIT = 0x100      # a PROXY protocol header is still expected (proxyproto.pxi)
    UF_READY = 0x200        # queued to continue at the end of the loop turn
    UF_SERVED = 0x400       # at least one response went out on this connection
    CN_VIRTUAL = 0x8000     # an HTTP/2 stream's connection: no socket, its bytes are the stream's (h2.pxi)

cdef enum:
    # Conn.flags of a downstream connection (DConn), above the shared bits
    DF_NO_REUSE = 0x40      # do not put back in the pool after this exchange
    DF_DECHUNK = 0x80       # strip chunk framing (HTTP/1.0 client)
    DF_EOF_BODY = 0x100     # close-delimited response body
    DF_GOT_BYTES = 0x200    # response bytes arrived for the current exchange
    DF_SPLICE = 0x800       # relay the rest of this body with splice(2)
    DF_HEAD_PARTIAL = 0x1000  # a response head is partly parsed in [hstart, rend): keep those bytes

cdef enum:
    # Exchange.flags
    XF_KEEPALIVE = 0x01     # the client wants the connection kept
    XF_HEAD_REQ = 0x02      # HEAD request: the response has no body
    XF_REQ_DONE = 0x04      # the whole request has been forwarded
    XF_RESP_STARTED = 0x08  # response bytes were sent to the client
    XF_HTTP10 = 0x10        # HTTP/1.0 client
    XF_UPGRADE = 0x20       # Upgrade request (tunnel after 101)
    XF_IDEMPOTENT = 0x40
    XF_REQ_SENT_ANY = 0x80  # some request bytes reached the downstream
    XF_PENDING = 0x100      # in the pending queue
    XF_BODY_SPILLED = 0x200 # the client buffer was reused mid-body: the request can't be replayed
    XF_RETRIED = 0x400      # already replayed once on another connection
    XF_REDIRECT_REFUSED = 0x800   # a 377 internal redirect was refused: relayed as 401
    XF_PIPE_OK = 0x1000     # may share a connection with other requests in flight (see pipeline.pxi)
    XF_PIPELINED = 0x2000   # joined a busy connection: its wait is not a time-to-first-byte sample
    XF_FAILED_FRESH = 0x4000      # the first attempt failed on a connection's first request
    XF_RESP_BUFFER = 0x8000       # response buffering: a slow client drains UConn.rbb (bodybuf.pxi)
    XF_BUFFERED = 0x10000         # request buffering read the whole body ahead
    XF_SENT_CONTINUE = 0x20000    # rproxy answered Expect: 100-continue itself (not forwarded)
    XF_REFUSE_CLOSE = 0x40000     # refused at admission with a framing fault: its body cannot be skipped, close
    XF_SPL_LOWAT = 0x80000        # a buffered body spliced under TCP_NOTSENT_LOWAT (splice.pxi)
    XF_SPL_GRACE = 0x100000       # ... and the client's socket is full now: dc.conn.timer ends its grace

cdef enum:
    HS_NONE = 0
    HS_FIELD = 1
    HS_VALUE = 2

cdef enum:
    # header names the proxy acts on
    H_OTHER = 0
    H_CONNECTION
    H_KEEP_ALIVE
    H_PROXY_CONNECTION
    H_TE
    H_TRAILER
    H_TRANSFER_ENCODING
    H_UPGRADE
    H_CONTENT_LENGTH
    H_HOST
    H_X_FORWARDED_FOR
    H_EXPECT
    H_X_REAL_IP
    H_X_FORWARDED_PROTO
    H_X_FORWARDED_HOST
    H_X_FORWARDED_PORT
    H_FORWARDED
    H_VIA
    H_X_SSL                 # any X-SSL-*: owned by the proxy, never taken from clients
    H_X_INTERNAL_REDIRECT
    H_HTTP2_SETTINGS        # h2c upgrade parameters: never forwarded (downstreams speak HTTP/1.1)

cdef enum:
    # underscores-in-headers (ServerRt.underscores): request header names with `_`
    US_DROP = 0             # dropped (nginx's default)
    US_ALLOW = 1            # forwarded, unless they alias a header the proxy owns or acts on
    US_REJECT = 2           # 400

cdef enum:
    # header policy (RuleRt.hp): request headers the proxy adds.  A header
    # the proxy sets is never taken from the client as well.
    HP_XFF = 0x001
    HP_XFF_REPLACE = 0x002  # RProxy 2.x: drop the client's chain
    HP_X_REAL_IP = 0x004
    HP_X_FORWARDED_PROTO = 0x008
    HP_X_FORWARDED_HOST = 0x010
    HP_X_FORWARDED_PORT = 0x020
    HP_FORWARDED = 0x040
    HP_VIA = 0x080

cdef enum:
    # rule match kinds
    M_PREFIX = 0
    M_EXACT = 1
    M_GLOB = 2
    M_REGEX = 3

cdef enum:
    # load-balancing methods
    LB_RTT = 0
    LB_ROUNDROBIN = 1
    LB_MOST_IDLE = 2
    LB_NONE = 3
    LB_RANDOM = 4
    LB_LEAST_PENDING = 5

cdef enum:
    # timer owners
    TK_UCONN = 1
    TK_DCONN = 2
    TK_EXCH = 3
    TK_WORKER = 4
    TK_PROBE = 5
    TK_LOGFLUSH = 6         # access log buffers (accesslog.pxi)
    TK_METRICS = 7          # gauges published to the metrics zone (metrics.pxi)
    TK_LIMIT = 8            # a request held by a `mode = delay` rate limit (limits.pxi)
    TK_REDIS = 9            # reconnecting to the rate limit store (redis.pxi)
    TK_CACHE = 10           # a request waiting for another's cache-lock (cache.pxi)

cdef enum:
    HDR_CAP = 128           # header slots per message (max-headers is capped to this)
    MAX_CONN_TOKENS = 8     # extra hop-by-hop names listed in a Connection header
    MAX_EVENTS = 256

cdef enum:
    # run() results handed back to Python
    RUN_STOPPED = 0         # fast stop (SIGTERM / SIGINT)
    RUN_DRAINED = 1         # graceful stop finished (SIGQUIT)
    RUN_REOPEN = 2          # SIGUSR1: Python reopens log files, then calls run() again
    RUN_ERROR = 3


cdef struct Span:
    uint32_t off            # offset into the owning read buffer
    uint32_t len

cdef struct Header:
    Span name
    Span value

cdef struct FreeList:
    # Items kept for reuse (buffers, exchanges, splice pipes): each item's
    # first field is its `next` pointer (see freelist_pop / freelist_push).
    void* head
    int n
    int cap                 # at most this many are kept; the rest are freed

cdef struct Buf:
    Buf* next               # first: the free list's link
    uint32_t cap
    # the data follows the struct (see bdata())

cdef struct Out:
    # Pending output of one direction: a head segment (owned buffer or static
    # bytes) followed by a body segment (borrowed from the producer's read
    # buffer, or owned once the producer has been let go).
    # (the two lengths last: no padding after each, 8 bytes less per connection)
    const char* hptr
    Buf* hbuf
    const char* bptr
    Buf* bbuf
    uint32_t hlen
    uint32_t blen

cdef struct Timer:
    int64_t when            # wanted deadline, ms; 0 = disarmed
    int64_t key             # deadline it is filed under in the heap
    int32_t idx             # heap index, -1 when not in the heap
    uint8_t kind
    void* owner

cdef struct Handle:
    uint8_t kind
    int fd

cdef struct Peer:
    uint8_t family          # AF_INET / AF_INET6 / AF_UNIX
    uint16_t port
    uint8_t addr[16]

cdef struct DownstreamRt
cdef struct RuleRt
cdef struct ServerRt
cdef struct UConn
cdef struct DConn
cdef struct Exchange

cdef struct NameList:
    # header names (case-insensitive), e.g. a vhost's strip-headers
    int n
    char** names
    uint32_t* lens

cdef struct SplicePipe
cdef struct BodyBuf         # a bounded body buffer: memory, then a temp file (bodybuf.pxi)
cdef struct AccessLog       # a compiled access log format and its output (accesslog.pxi)

cdef struct XLog:
    # What an exchange's access log line needs beyond the exchange itself
    # (accesslog.pxi): times, byte counts, the downstream connection used,
    # and copies of request/response bytes whose buffers were reused.
    int64_t t_start_us      # the first request byte arrived (loop clock)
    int64_t t_ds_us         # handed to a downstream connection; 0 = never
    int64_t t_ds_head_us    # its response head arrived; 0 = none
    uint64_t seq            # request id sequence number
    uint64_t bytes_out      # written to the client
    uint64_t body_base      # bytes_out + queued once the final response head was queued
    uint32_t flags          # XL_* (accesslog.pxi)
    uint16_t status         # a response of rproxy's own (canned), or 0
    uint16_t canned_len
    uint16_t canned_body
    uint16_t ds_sport
    DownstreamRt* ds        # the downstream used (the last one, after a replay)
    Peer ds_peer            # its address as connected
    char* req_copy          # the request head, once the client buffer is to be reused
    uint32_t req_copy_off   # client-buffer offset req_copy starts at
    uint32_t req_copy_len   # bytes in req_copy: spans outside [off, off + len) are not read
    char* resp_copy         # {DS_HDR} values, copied at the response head

cdef struct Tls                 # TLS state of a connection (tls.pxi)
cdef struct PPClient            # PROXY protocol state of a client connection (proxyproto.pxi)
cdef struct EdgeRule            # static files, redirects, header rules, sticky (edge.pxi)

cdef struct Exchange:
    Exchange* next          # free list / pending queue (first: the free list's link)
    Exchange* prev
    Exchange* pnext         # the next request in flight on the same downstream connection
    Exchange* unext         # the next (newer) exchange of the same client connection
    UConn* uc               # the client connection that owns it
    DConn* dc
    RuleRt* rule
    Timer ptimer            # pending-timeout
    uint32_t flags
    uint8_t hstate          # header parse state (request, then response)
    uint8_t method
    uint16_t status
    int16_t err_status      # status to answer when the parser was stopped on purpose
    Span method_sp
    Span url_sp
    Span reason_sp
    Span host_sp            # the effective host (absolute-form authority, else Host, OWS trimmed); len 0 = none
    const char* why         # why admission refused the request (logged), or NULL
    uint16_t nreq
    uint16_t nresp
    int64_t t_start         # ms, request began
    uint64_t body_in        # request body bytes forwarded
    uint32_t head_end       # the client's head ends here (offset in its read buffer)
    uint32_t path_off       # the path within the request target
    uint32_t path_len
    int32_t cut_so          # part of the path the rule replaces, -1 = none
    int32_t cut_eo
    int32_t grp[20]         # regex groups 0..9 (so, eo) of the path, for \\1..\\9 in replace-path
    DownstreamRt* failed_ds # where a replayed request failed first
    int64_t failed_at       # when (ms)
    SplicePipe* spl              # splice relay of a large body (see splice.pxi)
    BodyBuf* qbb            # request body read ahead beyond the client's read buffer (bodybuf.pxi)
    uint64_t splice_left
    int64_t spl_blocked_at       # g_now when the client's socket filled (XF_SPL_GRACE)
    int64_t spl_grace_left       # ms it may still stay blocked under the mark (splice.pxi)
    XLog log
    Header req[HDR_CAP]
    Header resp[HDR_CAP]
    void* cz                # CompStream* while the response is compressed (compress.pxi)
    uint8_t cz_coding       # the coding the client gets if its response is eligible (CZ_*)
    uint8_t cz_flags        # CZF_* (compress.pxi)
    uint8_t cst             # CS_*: what the cache did (cache.pxi)
    uint8_t cflags          # CF_*
    int cfd                 # a hit's entry file being served, -1
    int cwfd                # the temp file of an entry being stored, -1
    uint64_t coff           # hit: next body offset in the file
    uint64_t cleft          # hit: body bytes still to send; store: still to write
    uint64_t ckey           # the key's hash (0 = none)
    uint64_t cseq           # temp file number
    int64_t creq_time       # unix seconds the request reached the cache
    char* ckey_copy         # the key itself (malloc), for storing
    uint32_t ckey_len
    uint8_t edge_wait       # waiting for the Redis store's answer (limits.pxi)
    uint8_t edge_next       # the next of its rule's limits to check
    int64_t edge_hold       # us to hold it (delay mode), the largest so far
    void* edge_limit        # LimitRt* that refused / delayed it, for {RATE_LIMIT}; NULL = none
    int sf_fd               # a static file being sent (static.pxi), -1 = none
    uint64_t sf_off
    uint64_t sf_left
    int16_t sticky_set      # edge.pxi: set the sticky cookie for the downstream used (1), or not (0)
    void* cx                # CacheX* (cache.pxi): a cacheable request's cache state, NULL = none

cdef struct Conn:
    # What a client connection (UConn) and a downstream connection (DConn)
    # share: the first member of both, so a Conn* points at either.
    Handle h                # first: epoll's data.ptr is read as a Handle
    uint8_t state           # U_* or D_*
    uint32_t flags          # CN_* and the side's UF_* or DF_*
    Buf* rbuf
    uint32_t rpos           # parsed up to here
    uint32_t fpos           # forwarded (or skipped) up to here
    uint32_t rend           # data ends here
    Peer peer               # client: its address; downstream: the address connected to (here: no padding)
    Out out
    Timer timer
    llhttp_t parser
    Tls* tls                # NULL: plain TCP

cdef struct UConn:
    Conn conn
    ServerRt* srv
    UConn* prev             # all client connections of the worker
    UConn* next
    UConn* rnext            # ready list
    # The exchanges this connection owns, oldest first, linked by
    # Exchange.unext (uc_x_push / uc_x_end, upstream.pxi).  HTTP/1.1 holds
    # one at a time today (the parser pauses at the end of each request
    # until its response is out); HTTP/2 streams would hold several.
    Exchange* xhead         # the oldest: its response is the one written to the client
    Exchange* xtail         # the newest: its request is the one being parsed
    BodyBuf* rbb            # response bytes the client has not taken yet (bodybuf.pxi)
    uint32_t mstart         # the current message head starts here
    void* h2                # HTTP/2 session or stream (h2.pxi), NULL = HTTP/1.1
    PPClient* pp            # PROXY protocol state (proxyproto.pxi), allocated only when needed; NULL = none

cdef struct DConn:
    Conn conn
    uint8_t phase           # R_*: the response being read
    uint8_t extra           # a slot beyond `connections`: opened on demand, closed when idle
    uint16_t ninflight      # exchanges in flight (1 unless the downstream pipelines)
    uint16_t local_port
    DownstreamRt* ds
    DConn* iprev            # idle list of the downstream
    DConn* inext
    Exchange* x             # the exchange whose response is read (oldest in flight)
    Exchange* xlast         # the newest in flight: its request is the one being written
    uint32_t fend           # forwardable end (differs from rpos when dechunking)
    uint32_t hstart         # the current response head starts here
    uint32_t nreq           # requests served on this connection
    int32_t fails           # consecutive failures (reconnect backoff)
    int64_t connected_at
    int64_t assigned_at
    int64_t idle_since      # ms
    UConn* owner            # a private connection's client (proxy-protocol, pool.pxi); NULL: pooled
    DConn* onext            # the owner's next private connection

cdef struct DownstreamRt:
    int index
    uint64_t* mc            # its metrics records in the zone (metrics.pxi), NULL = off
    uint64_t* mg
    char name[64]
    char label[112]         # addr:port as configured, for logs
    int errfd               # its server's error log; 0 = the worker's (g_errfd)
    uint8_t addr[128]       # sockaddr_storage bytes
    uint32_t addrlen
    int family
    int nconns              # `connections`: kept connected
    int nslots              # `max-connections`: slots allocated; [nconns, nslots) open on demand
    DConn* conns
    DConn* idle_first
    DConn* idle_last
    int n_idle
    int n_up
    int n_active
    int enabled
    int weight
    int64_t retry_ms
    int64_t connect_timeout_ms
    int64_t read_timeout_ms
    int64_t write_timeout_ms
    int64_t idle_timeout_ms
    int64_t max_age_ms
    uint32_t max_requests
    uint32_t high_watermark # request direction: client body bytes read at a time (0 = buffer)
    int max_fails           # consecutive failed exchanges before ejection
    int64_t fail_timeout_ms # first ejection; doubled while failing, up to 12x
    int pipeline            # requests in flight per connection (1: no pipelining)
    int fails_in_row
    int ejections           # consecutive ejections (doubles the next one)
    int64_t eject_until     # ms; not picked before this unless every downstream is ejected
    uint8_t hc_down         # the active health check says down
    uint8_t hostname        # addr is a name: re-resolved by the worker's resolver thread
    int hc_rise
    int hc_fall
    int64_t hc_interval_ms
    int64_t hc_timeout_ms
    char hc_path[256]
    double rtt_ms           # EWMA of time to first response byte
    uint32_t rtt_samples
    uint8_t nodelay
    uint8_t down_logged     # "is down" was logged; log "is up" on recovery
    void* tls_ctx           # SSL_CTX* when the downstream speaks TLS, else NULL
    char tls_name[256]      # SNI and the name checked in its certificate ("" for none)
    void* tls_session       # SSL_SESSION* to resume the next connection with
    uint8_t tls_err_logged
    uint8_t pp              # proxy-protocol: 0 off, 1 v1, 2 v2 (private connections, pool.pxi)
    int pp_fails            # private connects failed in a row
    int64_t pp_retry_at     # ms: no private connect before this (backoff after a failure)

cdef struct VhostRt
cdef struct EdgePolicy      # access rules, deny, rate limits of a rule (limits.pxi)

cdef struct RuleRt:
    char name[64]
    uint64_t* mc            # its metrics records in the zone (metrics.pxi), NULL = off
    uint64_t* mg
    int m_pending
    VhostRt* vhost
    int match
    char* pattern
    uint32_t plen
    regex_t* regex
    int nsub                # capture groups of the regex
    DownstreamRt** dss
    int nds
    int lb
    int rr_next
    int64_t* rr_cur         # smooth weighted round-robin: current weight per downstream
    uint32_t hp             # HP_* header policy
    char* replace           # 1.x rewrite dst / 2.x replace-path, NULL = keep the path
    uint32_t replace_len
    uint8_t rewrite_1x      # replace up to the end of the last capture group (1.x rewrite)
    uint8_t replace_refs    # the replacement holds \\1..\\9
    uint8_t passthrough     # raw pipe after the request head (RProxy's passthrough)
    uint8_t allow_redirect
    NameList redirect_filter
    int64_t up_read_ms      # upstream-read-timeout: the client's, once routed here (0 = server's)
    int64_t up_write_ms
    uint64_t xssl           # X-SSL-* headers this rule sends (bits: see tls.pxi)
    uint8_t request_buffering
    uint8_t response_buffering
    void* comp              # CompRule* (compress.pxi), NULL = no compression
    void* cache             # CacheRt* (cache.pxi), NULL = no cache
    EdgePolicy* edge        # limits.pxi: NULL = nothing to check
    EdgeRule* serve_edge    # static files, redirect, header rules, sticky (edge.pxi); NULL = none

cdef struct VhostRt:
    char name[128]
    NameList strip          # response headers removed (strip-headers)
    AccessLog* alog         # its access log, else its server's (NULL: none)
    int errfd               # its error log, else its server's; 0 = the worker's (g_errfd)
    char** globs
    uint32_t* glob_lens
    int nglobs
    RuleRt* rules
    int nrules
    int is_default
    void* tls_ctx           # SSL_CTX* of the vhost's own ssl block (SNI switches to it), else NULL
    int tls_verify_depth
    uint8_t https_redirect  # plain-HTTP requests get a 301 to https
    uint16_t https_redirect_port

cdef struct ServerRt:
    int index
    uint64_t* mc            # its metrics records in the zone (metrics.pxi), NULL = off
    uint64_t* mg
    uint64_t* mc_none       # requests no rule took
    VhostRt* vhosts
    int nvhosts
    int64_t read_timeout_ms
    int64_t write_timeout_ms
    int64_t keepalive_timeout_ms
    int64_t pending_timeout_ms
    int64_t tunnel_timeout_ms
    uint32_t high_watermark # response direction: bytes read from a downstream at a time (0 = buffer)
    uint32_t max_request_line
    uint32_t max_header_size
    uint32_t max_headers
    uint64_t client_max_body_size
    uint8_t underscores     # US_*: request header names containing `_`
    uint32_t client_body_buffer_size
    uint32_t response_buffer_size
    uint64_t max_temp_file_size
    int64_t client_body_timeout_ms
    int64_t send_timeout_ms
    int max_pending
    AccessLog* alog         # access log of requests not routed to a vhost with its own (NULL: none)
    int errfd               # its error log; 0 = the worker's (g_errfd)
    uint8_t nodelay
    uint16_t port           # for X-Forwarded-Port / Forwarded
    uint8_t tls
    void* tls_ctx           # SSL_CTX* of a TLS listener, else NULL
    int tls_verify_depth
    void* tls_hdr_fn        # PyObject*: client certificate -> X-SSL-* header block (NULL: none wanted)
    void* pp                # PPServer* (proxyproto.pxi): PROXY protocol expected; NULL = no
    uint8_t http2           # HTTP/2: ALPN h2 (TLS) or prior knowledge (plain) (h2.pxi)
    uint32_t h2_max_streams         # http2-max-concurrent-streams
    uint32_t h2_max_resets          # http2-max-resets-per-second
    uint32_t h2_max_ctl             # http2-max-control-frames-per-second
    uint32_t h2_max_cont            # http2-max-continuations
cdef struct Listener:
    Handle h
    ServerRt* srv
    int registered
