/* Small C helpers for the fast path that Cython cannot express well:
 * varargs error logging.  Client data is only ever passed as an argument
 * ("%.*s"), never as the format. */
#ifndef RP_UTIL_H
#define RP_UTIL_H
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *rp_level_names[] = {"emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"};

/* One error-log line: "2026-11-23T12:00:00.123+0000 [warn] 1234: message\n".
 * A single write(2), so lines from several workers never interleave. */
static void rp_elog(int fd, int level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    int m;
    va_list ap;

    if (fd < 0)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    m = snprintf(line + n, sizeof(line) - n, ".%03ld", ts.tv_nsec / 1000000);
    if (m > 0) n += (size_t)m;
    n += strftime(line + n, sizeof(line) - n, "%z", &tm);
    if (level < 0) level = 0;
    if (level > 7) level = 7;
    m = snprintf(line + n, sizeof(line) - n, " [%s] %d: ", rp_level_names[level], (int)getpid());
    if (m > 0) n += (size_t)m;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m > 0) n += ((size_t)m < sizeof(line) - n - 1) ? (size_t)m : sizeof(line) - n - 2;
    line[n++] = '\n';
    if (write(fd, line, n) < 0) { /* nowhere left to report it */ }
}
#endif
