/* Small C helpers for the fast path that Cython cannot express well:
 * varargs error logging, and the syslog line format shared with the access
 * logs.  Client data is only ever passed as an argument ("%.*s"), never as
 * the format. */
#ifndef RP_UTIL_H
#define RP_UTIL_H
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static const char *rp_level_names[] = {"emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"};

/* ---- error log outputs ---------------------------------------------------
 *
 * Callers name an error log by its descriptor (g_errfd, or the descriptor of
 * a server's own error log).  This table says, per descriptor, the least
 * severe level it keeps and whether it is a syslog socket; a descriptor not
 * in it keeps everything and gets plain lines.  Reopening a log (SIGUSR1)
 * puts the new file on the same descriptor number (dup2), so the table
 * never changes after start-up.  Each output with its own level has its own
 * descriptor (the worker dups stderr for that), so the lookup is exact. */
#define RP_ELOG_MAX 64
#define RP_SOCK_PATH_MAX 108

typedef struct {
    int fd;
    int level;                      /* 0 emerg .. 7 debug */
    int facility;                   /* syslog facility code (LOG_LOCAL0 = 16 << 3), -1: plain lines */
    char sock[RP_SOCK_PATH_MAX];    /* syslog: socket path, to reconnect after the daemon restarts */
} rp_elog_out_t;

static rp_elog_out_t rp_elog_outs[RP_ELOG_MAX];
static int rp_elog_nouts = 0;
static unsigned long rp_elog_dropped = 0;      /* syslog lines dropped: the socket was full */

static void rp_elog_set(int fd, int level, int facility, const char *sock)
{
    int i;
    rp_elog_out_t *o = NULL;
    for (i = 0; i < rp_elog_nouts; i++)
        if (rp_elog_outs[i].fd == fd)
            o = &rp_elog_outs[i];
    if (o == NULL) {
        if (rp_elog_nouts == RP_ELOG_MAX)
            return;
        o = &rp_elog_outs[rp_elog_nouts++];
    }
    o->fd = fd;
    o->level = level < 0 ? 0 : (level > 7 ? 7 : level);
    o->facility = facility;
    o->sock[0] = 0;
    if (sock != NULL)
        snprintf(o->sock, sizeof(o->sock), "%s", sock);
}

static void rp_elog_clear(void)
{
    rp_elog_nouts = 0;
}

static inline const rp_elog_out_t *rp_elog_find(int fd)
{
    int i;
    for (i = 0; i < rp_elog_nouts; i++)
        if (rp_elog_outs[i].fd == fd)
            return &rp_elog_outs[i];
    return NULL;
}

/* Would a message of this level be kept?  (Lets a caller skip building one.) */
static inline int rp_elog_wants(int fd, int level)
{
    const rp_elog_out_t *o = rp_elog_find(fd);
    return o == NULL || level <= o->level;
}

/* ---- syslog ----------------------------------------------------------------
 *
 * The local form of RFC 3164, byte for byte what glibc's syslog(3) sends to
 * /dev/log: "<PRI>Mmm dd hh:mm:ss rproxy[PID]: message", month in English,
 * day padded with a space, local time, no hostname, no trailing newline.
 * Every local syslog daemon parses that on its socket; rsyslog's imuxsock
 * does not parse RFC 5424 headers there. */
static const char rp_months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* "<PRI>Mmm dd hh:mm:ss rproxy[PID]: " into out (at least 64 bytes); returns its length. */
static int rp_syslog_header(char *out, int pri, time_t now, int pid)
{
    struct tm tm;
    localtime_r(&now, &tm);
    return snprintf(out, 64, "<%d>%s %2d %02d:%02d:%02d rproxy[%d]: ", pri, rp_months[tm.tm_mon % 12],
                    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, pid);
}

/* A fresh non-blocking datagram socket connected to `path`, on descriptor
 * `fd` (dup3 keeps the number callers know).  0 or -1. */
static int rp_syslog_reconnect(int fd, const char *path)
{
    struct sockaddr_un sa;
    int s, rc;
    if (path == NULL || path[0] == 0)
        return -1;
    s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(s);
        return -1;
    }
    rc = dup3(s, fd, O_CLOEXEC) < 0 ? -1 : 0;
    close(s);
    return rc;
}

/* One datagram.  A daemon that restarted left our socket connected to
 * nothing: reconnect once and retry.  A full socket drops the line (the
 * event loop never waits for syslog).  0 sent, -1 dropped. */
static int rp_syslog_send(int fd, const char *path, const char *msg, size_t n)
{
    int tries;
    for (tries = 0; tries < 2; tries++) {
        if (send(fd, msg, n, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
            return 0;
        if (errno == EINTR) {
            tries--;
            continue;
        }
        if (tries == 0 && (errno == ECONNREFUSED || errno == ENOTCONN || errno == ENOENT
                           || errno == EDESTADDRREQ)) {
            if (rp_syslog_reconnect(fd, path) == 0)
                continue;
        }
        return -1;
    }
    return -1;
}

/* ---- one error line ---------------------------------------------------------
 *
 * File or stream: "2026-11-23T12:00:00.123+0000 [warn] 1234: message\n" in a
 * single write(2), so lines from several workers never interleave.
 * Syslog: "<PRI>Nov 23 12:00:00 rproxy[1234]: [warn] message". */
/* Bytes of a message that could split or fake a line (control bytes, DEL)
 * become '?': a value a client or downstream chose, printed with %.*s,
 * stays on its line.  (Such values are arguments, never the format.) */
static inline void rp_elog_scrub(char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] == 0x7f)
            p[i] = '?';
}

static void rp_elog(int fd, int level, const char *fmt, ...)
{
    size_t msg;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    int m;
    va_list ap;
    const rp_elog_out_t *o;

    if (fd < 0)
        return;
    if (level < 0) level = 0;
    if (level > 7) level = 7;
    o = rp_elog_find(fd);
    if (o != NULL && level > o->level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (o != NULL && o->facility >= 0) {
        m = rp_syslog_header(line, o->facility | level, ts.tv_sec, (int)getpid());
        n = m > 0 ? (size_t)m : 0;
        m = snprintf(line + n, sizeof(line) - n, "[%s] ", rp_level_names[level]);
        if (m > 0) n += (size_t)m;
        msg = n;
        va_start(ap, fmt);
        m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        if (m > 0) n += ((size_t)m < sizeof(line) - n) ? (size_t)m : sizeof(line) - n - 1;
        rp_elog_scrub(line + msg, n - msg);
        if (rp_syslog_send(fd, o->sock, line, n) != 0)
            rp_elog_dropped++;
        return;
    }
    localtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    m = snprintf(line + n, sizeof(line) - n, ".%03ld", ts.tv_nsec / 1000000);
    if (m > 0) n += (size_t)m;
    n += strftime(line + n, sizeof(line) - n, "%z", &tm);
    m = snprintf(line + n, sizeof(line) - n, " [%s] %d: ", rp_level_names[level], (int)getpid());
    if (m > 0) n += (size_t)m;
    msg = n;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m > 0) n += ((size_t)m < sizeof(line) - n - 1) ? (size_t)m : sizeof(line) - n - 2;
    rp_elog_scrub(line + msg, n - msg);
    line[n++] = '\n';
    if (write(fd, line, n) < 0) { /* nowhere left to report it */ }
}
#endif
