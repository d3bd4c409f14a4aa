/*
 * An LD_PRELOAD experiment, not part of media-repo: sets TCP_NODELAY on every TCP socket a
 * process accepts or connects, to show what Nagle's algorithm costs media-repo's small
 * responses (see "HTTP downloads (issue 4)" in docs/benchmarks.md).
 *
 *   gcc -shared -fPIC -O2 -o /tmp/nodelay_shim.so crates/bench/scripts/nodelay_shim.c -ldl
 *   BENCH_MEDIA_REPO_PRELOAD=/tmp/nodelay_shim.so python3 crates/bench/scripts/download.py
 *
 * -DNO_ACCEPT leaves accepted sockets (the HTTP listener) alone, -DNO_CONNECT leaves
 * outgoing ones (Redis, the homeserver) alone, to tell the two apart.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void set_nodelay(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
}

#ifndef NO_ACCEPT
int accept4(int sock, struct sockaddr *addr, socklen_t *len, int flags)
{
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real)
        real = dlsym(RTLD_NEXT, "accept4");
    int fd = real(sock, addr, len, flags);
    if (fd >= 0)
        set_nodelay(fd);
    return fd;
}

int accept(int sock, struct sockaddr *addr, socklen_t *len)
{
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real)
        real = dlsym(RTLD_NEXT, "accept");
    int fd = real(sock, addr, len);
    if (fd >= 0)
        set_nodelay(fd);
    return fd;
}
#endif

#ifndef NO_CONNECT
int connect(int sock, const struct sockaddr *addr, socklen_t len)
{
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real)
        real = dlsym(RTLD_NEXT, "connect");
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6))
        set_nodelay(sock);
    return real(sock, addr, len);
}
#endif
