# Linux system interfaces the fast path calls directly (no Python in between).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLLRDHUP
        EPOLLET
        EPOLLEXCLUSIVE
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len
    ssize_t writev(int fd, const iovec* iov, int iovcnt)

cdef extern from "<sys/socket.h>" nogil:
    ctypedef uint32_t socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    int socket(int domain, int type, int protocol)
    int accept4(int sockfd, sockaddr* addr, socklen_t* addrlen, int flags)
    int connect(int sockfd, const sockaddr* addr, socklen_t addrlen)
    ssize_t recv(int sockfd, void* buf, size_t len, int flags)
    ssize_t send(int sockfd, const void* buf, size_t len, int flags)
    int shutdown(int sockfd, int how)
    int setsockopt(int sockfd, int level, int optname, const void* optval, socklen_t optlen)
    int getsockopt(int sockfd, int level, int optname, void* optval, socklen_t* optlen)
    int getsockname(int sockfd, sockaddr* addr, socklen_t* addrlen)
    int getpeername(int sockfd, sockaddr* addr, socklen_t* addrlen)
    enum:
        AF_INET
        AF_INET6
        AF_UNIX
        SOCK_STREAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        SOL_SOCKET
        SO_ERROR
        SO_KEEPALIVE
        SO_LINGER
        MSG_NOSIGNAL
        MSG_DONTWAIT
        MSG_PEEK
        SHUT_WR
        SHUT_RDWR
    struct linger:
        int l_onoff
        int l_linger

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        in6_addr sin6_addr
    enum:
        IPPROTO_TCP
    uint16_t ntohs(uint16_t)
    uint16_t htons(uint16_t)

cdef extern from "<netinet/tcp.h>" nogil:
    enum:
        TCP_NODELAY
        TCP_NOTSENT_LOWAT

cdef extern from "<sys/un.h>" nogil:
    struct sockaddr_un:
        sa_family_t sun_family
        char sun_path[108]

cdef extern from "<arpa/inet.h>" nogil:
    const char* inet_ntop(int af, const void* src, char* dst, socklen_t size)
    int inet_pton(int af, const char* src, void* dst)
    enum:
        INET6_ADDRSTRLEN

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t write(int fd, const void* buf, size_t count)
    ssize_t read(int fd, void* buf, size_t count)
    int getpid()
    int getppid()
    int pipe2(int pipefd[2], int flags)

cdef extern from "<fcntl.h>" nogil:
    enum:
        O_NONBLOCK
        O_CLOEXEC
        SPLICE_F_MOVE
        SPLICE_F_NONBLOCK
        SPLICE_F_MORE
        F_SETPIPE_SZ
    ssize_t splice(int fd_in, long long* off_in, int fd_out, long long* off_out, size_t len, unsigned int flags)
    int fcntl(int fd, int cmd, ...)

cdef extern from "<signal.h>" nogil:
    ctypedef struct sigset_t:
        pass
    int sigemptyset(sigset_t* s)
    int sigaddset(sigset_t* s, int signum)
    int pthread_sigmask(int how, const sigset_t* s, sigset_t* old)
    enum:
        SIG_BLOCK
        SIG_UNBLOCK
        SIG_SETMASK

cdef extern from "<sys/signalfd.h>" nogil:
    struct signalfd_siginfo:
        uint32_t ssi_signo
        int32_t ssi_pid
    int signalfd(int fd, const sigset_t* mask, int flags)
    enum:
        SFD_NONBLOCK
        SFD_CLOEXEC

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec* tp)
    enum:
        CLOCK_MONOTONIC
        CLOCK_MONOTONIC_COARSE
        CLOCK_REALTIME
        CLOCK_REALTIME_COARSE

cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)
    enum:
        PR_SET_PDEATHSIG

cdef extern from "<malloc.h>" nogil:
    int mallopt(int param, int value)
    int malloc_trim(size_t pad)
    enum:
        M_TRIM_THRESHOLD

cdef extern from "<strings.h>" nogil:
    int strncasecmp(const char* s1, const char* s2, size_t n)

cdef extern from "<string.h>" nogil:
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen)
    void* memchr(const void* s, int c, size_t n)

cdef extern from "<regex.h>" nogil:
    ctypedef struct regex_t:
        size_t re_nsub
    ctypedef int regoff_t
    ctypedef struct regmatch_t:
        regoff_t rm_so
        regoff_t rm_eo
    int regcomp(regex_t* preg, const char* regex, int cflags)
    int regexec(const regex_t* preg, const char* string, size_t nmatch, regmatch_t* pmatch, int eflags)
    void regfree(regex_t* preg)
    size_t regerror(int errcode, const regex_t* preg, char* errbuf, size_t errbuf_size)
    enum:
        REG_EXTENDED
        REG_NOSUB
        REG_ICASE
        REG_STARTEND
