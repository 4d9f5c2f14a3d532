/* kaserve: the keep-alive small-response path, twice: an edge-triggered epoll
 * loop shaped like rproxy's (recv until short, send at once) and an io_uring
 * loop (multishot accept, multishot recv into a provided-buffer ring, sends
 * batched into one io_uring_enter with their success completions skipped).
 * Both answer every request (each "\r\n\r\n") with the same fixed ~230-byte
 * response, as a proxy relays nginx's answer for an empty file.
 *
 *   kaserve epoll PORT | kaserve uring PORT      (runs until SIGTERM/SIGINT)
 *
 * A measuring prototype for issue 22 item 3, not part of the proxy; built
 * and driven by measure.sh next to it. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef WITH_URING
#include <liburing.h>
#endif

static const char RESP[] =
    "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 01:00:00 GMT\r\n"
    "Content-Type: application/octet-stream\r\nContent-Length: 0\r\n"
    "Last-Modified: Sat, 05 Dec 2026 00:00:00 GMT\r\nConnection: keep-alive\r\n"
    "Accept-Ranges: bytes\r\n\r\n";
#define RESP_LEN (sizeof(RESP) - 1)
#define MAXFD 65536
#define RBUF 4096

static volatile sig_atomic_t g_stop;
static void on_sig(int s) { (void)s; g_stop = 1; }

/* requests completed in p[0..n), keeping per fd how much of a "\r\n\r\n"
 * the previous read ended with, so a terminator split across reads counts */
static unsigned char g_tail[MAXFD];   /* per fd: how many of "\r\n\r\n" matched */
static int count_requests(int fd, const char* p, int n) {
    static const char T[4] = {'\r', '\n', '\r', '\n'};
    int k = g_tail[fd], c = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] == T[k]) {
            if (++k == 4) { c++; k = 0; }
        } else {
            k = (p[i] == '\r') ? 1 : 0;
        }
    }
    g_tail[fd] = (unsigned char)k;
    return c;
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr*)&a, sizeof a) || listen(fd, 4096)) { perror("listen"); exit(2); }
    return fd;
}

static char g_many[RESP_LEN * 16];    /* up to 16 pipelined answers in one send */

static void answer(int fd, int nreq) {
    while (nreq > 0) {
        int k = nreq > 16 ? 16 : nreq;
        if (send(fd, g_many, RESP_LEN * k, MSG_NOSIGNAL) < 0) return;
        nreq -= k;
    }
}

static int run_epoll(int lfd) {
    int ep = epoll_create1(EPOLL_CLOEXEC), one = 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = lfd}, evs[512];
    char buf[RBUF];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    while (!g_stop) {
        int n = epoll_wait(ep, evs, 512, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    g_tail[c] = 0;
                    struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            for (;;) {   /* as rproxy: read until a short read (drained), answer each read at once */
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r > 0) {
                    answer(fd, count_requests(fd, buf, (int)r));
                    if (r < (ssize_t)sizeof buf && !(evs[i].events & EPOLLRDHUP)) break;
                    continue;
                }
                if (r < 0 && errno == EINTR) continue;
                if (r < 0 && errno == EAGAIN) break;
                close(fd);
                break;
            }
        }
    }
    return 0;
}

#ifdef WITH_URING
enum { T_ACCEPT = 1, T_RECV = 2, T_SEND = 3 };
#define UD(t, fd) (((uint64_t)(t) << 32) | (uint32_t)(fd))
#define NBUF 4096
#define BGID 7

static struct io_uring g_ring;
static struct io_uring_buf_ring* g_br;
static char* g_bufs;

static struct io_uring_sqe* sqe_get(void) {
    struct io_uring_sqe* s = io_uring_get_sqe(&g_ring);
    if (!s) {                       /* SQ full: flush it, then there is room */
        io_uring_submit(&g_ring);
        s = io_uring_get_sqe(&g_ring);
    }
    return s;
}

static void arm_accept(int lfd) {
    struct io_uring_sqe* s = sqe_get();
    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, UD(T_ACCEPT, lfd));
}

static void arm_recv(int fd) {
    struct io_uring_sqe* s = sqe_get();
    io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    io_uring_sqe_set_data64(s, UD(T_RECV, fd));
}

static void queue_answer(int fd, int nreq) {
    while (nreq > 0) {
        int k = nreq > 16 ? 16 : nreq;
        struct io_uring_sqe* s = sqe_get();
        io_uring_prep_send(s, fd, g_many, RESP_LEN * k, MSG_NOSIGNAL);
        s->flags |= IOSQE_CQE_SKIP_SUCCESS;     /* only a failure posts a completion */
        io_uring_sqe_set_data64(s, UD(T_SEND, fd));
        nreq -= k;
    }
}

static int run_uring(int lfd) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = 16384;
    int r = io_uring_queue_init_params(2048, &g_ring, &p);
    if (r < 0) { fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-r)); return 2; }
    size_t rsz = NBUF * sizeof(struct io_uring_buf);
    g_br = mmap(NULL, rsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    g_bufs = malloc((size_t)NBUF * RBUF);
    struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)g_br, .ring_entries = NBUF, .bgid = BGID};
    if ((r = io_uring_register_buf_ring(&g_ring, &reg, 0)) < 0) {
        fprintf(stderr, "register_buf_ring: %s\n", strerror(-r));
        return 2;
    }
    io_uring_buf_ring_init(g_br);
    for (int i = 0; i < NBUF; i++)
        io_uring_buf_ring_add(g_br, g_bufs + (size_t)i * RBUF, RBUF, i, io_uring_buf_ring_mask(NBUF), i);
    io_uring_buf_ring_advance(g_br, NBUF);
    arm_accept(lfd);
    int one = 1;
    while (!g_stop) {
        r = io_uring_submit_and_wait(&g_ring, 1);     /* all queued sends/arms go in the same call */
        if (r < 0 && r != -EINTR) { fprintf(stderr, "submit_and_wait: %s\n", strerror(-r)); return 2; }
        struct io_uring_cqe* cqe;
        unsigned head, seen = 0, recycled = 0;
        io_uring_for_each_cqe(&g_ring, head, cqe) {
            seen++;
            int t = (int)(cqe->user_data >> 32), fd = (int)(uint32_t)cqe->user_data;
            int res = cqe->res;
            if (t == T_ACCEPT) {
                if (res >= 0) {
                    setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    g_tail[res] = 0;
                    arm_recv(res);
                }
                if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept(lfd);
            } else if (t == T_RECV) {
                if (res > 0) {
                    int bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                    char* b = g_bufs + (size_t)bid * RBUF;
                    queue_answer(fd, count_requests(fd, b, res));
                    io_uring_buf_ring_add(g_br, b, RBUF, bid, io_uring_buf_ring_mask(NBUF), recycled++);
                    if (!(cqe->flags & IORING_CQE_F_MORE)) arm_recv(fd);
                } else if (res == -ENOBUFS) {
                    arm_recv(fd);       /* the ring ran dry; buffers come back below */
                } else if (!(cqe->flags & IORING_CQE_F_MORE)) {
                    close(fd);          /* EOF or error: the multishot recv ended */
                }
            }   /* T_SEND: only failures arrive (the peer went away): the recv side closes */
        }
        if (recycled) io_uring_buf_ring_advance(g_br, recycled);
        io_uring_cq_advance(&g_ring, seen);
    }
    io_uring_queue_exit(&g_ring);
    return 0;
}
#endif

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: kaserve epoll|uring PORT\n"); return 2; }
    for (int i = 0; i < 16; i++) memcpy(g_many + i * RESP_LEN, RESP, RESP_LEN);
    struct sigaction sa = {.sa_handler = on_sig};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_on(atoi(argv[2]));
    if (!strcmp(argv[1], "epoll")) return run_epoll(lfd);
#ifdef WITH_URING
    if (!strcmp(argv[1], "uring")) return run_uring(lfd);
#endif
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
