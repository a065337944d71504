/*
 * floor: the least a server can do for chatd's fan-out, in C, to measure
 * what the kernel alone costs per delivery on this machine.
 *
 *   floor PORT
 *
 * It speaks just enough of the protocol for bench/loadgen.c: HELLO ->
 * WELCOME `name.id.color`, READY -> JOIN `id.color.name` to everyone
 * (its own first), SAY -> MESSAGE `id.color.name.text` to everyone, ECHO
 * and PING answered; nothing else is checked (frames in the wrong state are
 * ignored), no limits, no timeouts.  A benchmark reference, not a server.  It batches the
 * way chatd does: every frame sequenced while one epoll_wait's events are
 * handled is appended to one buffer, and each active connection gets one
 * send() of it per loop iteration (what the kernel does not take is kept
 * and sent on EPOLLOUT).  So its CPU time per delivery under the same load
 * is the floor that the kernel's loopback TCP puts under chatd's figure:
 * the system calls, copies and the receive side that loopback runs in the
 * sender's context.
 *
 * Build: gcc -O2 -std=c11 -Wall -o floor floor.c
 * Listens on 127.0.0.1 only.  Runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { T_ECHO = 1, T_HELLO, T_WELCOME, T_READY, T_SAY, T_MESSAGE, T_JOIN,
       T_LEAVE, T_PING, T_PONG };
#define HEADER 8
#define MAX_PAYLOAD 1016
#define RBUF (64 * 1024)
#define MAXCONN 65536

typedef struct {
    uint8_t *data;
    size_t len, cap;
} Buf;

typedef struct {
    int fd, active, used;
    uint32_t id;
    char prefix[64]; /* id.color.name. */
    size_t prefixlen;
    uint8_t partial[HEADER + MAX_PAYLOAD];
    size_t partiallen;
    Buf out; /* what the kernel has not taken yet */
} Conn;

static Conn *conns;
static int *active;
static int nactive;
static Buf batch;
static int ep;
static uint32_t nextId = 1;

static void put(Buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = realloc(b->data, b->cap);
        if (!b->data) {
            perror("realloc");
            exit(2);
        }
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void header(Buf *b, uint32_t type, uint32_t size)
{
    uint32_t h[2] = {htonl(type), htonl(size)};
    put(b, h, HEADER);
}

static void dropConn(Conn *c)
{
    close(c->fd);
    if (c->active)
        for (int i = 0; i < nactive; i++)
            if (active[i] == c->fd) {
                active[i] = active[--nactive];
                break;
            }
    free(c->out.data);
    memset(c, 0, sizeof *c);
}

/* Send b to c now, keeping what the kernel does not take. */
static void sendTo(Conn *c, const uint8_t *p, size_t n)
{
    if (c->out.len) {
        put(&c->out, p, n);
        return;
    }
    ssize_t sent = send(c->fd, p, n, MSG_NOSIGNAL);
    if (sent < 0) {
        if (errno != EAGAIN) {
            dropConn(c);
            return;
        }
        sent = 0;
    }
    if ((size_t)sent < n) {
        put(&c->out, p + sent, n - (size_t)sent);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = c->fd};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void flushBatch(void)
{
    if (!batch.len)
        return;
    for (int i = nactive - 1; i >= 0; i--) /* dropConn may move the tail here */
        sendTo(&conns[active[i]], batch.data, batch.len);
    batch.len = 0;
}

/* Replies to one read, sent with one send() once the read is handled. */
static Buf replies;

static void sendReplies(Conn *c)
{
    if (replies.len)
        sendTo(c, replies.data, replies.len);
    replies.len = 0;
}

static void frame(Conn *c, uint32_t type, const uint8_t *p, uint32_t size)
{
    Buf *reply = &replies;
    switch (type) {
    case T_HELLO: {
        const uint8_t *dot = memchr(p, '.', size);
        size_t namelen = dot ? (size_t)(dot - p) : size;
        if (namelen > 32)
            namelen = 32;
        c->id = nextId++;
        unsigned color = c->id % 256;
        char w[64];
        int n = snprintf(w, sizeof w, "%.*s.%u.%u", (int)namelen, (const char *)p, c->id, color);
        header(reply, T_WELCOME, (uint32_t)n);
        put(reply, w, (size_t)n);
        c->prefixlen = (size_t)snprintf(c->prefix, sizeof c->prefix, "%u.%u.%.*s.", c->id,
                                        color, (int)namelen, (const char *)p);
        break;
    }
    case T_READY:
        if (!c->prefixlen || c->active)
            return; /* READY before HELLO, or twice: ignored */
        /* WELCOME first; the newcomer gets nothing sequenced before its JOIN. */
        sendReplies(c);
        if (!conns[c->fd].used)
            return;
        flushBatch();
        c->active = 1;
        active[nactive++] = c->fd;
        header(&batch, T_JOIN, (uint32_t)c->prefixlen - 1);
        put(&batch, c->prefix, c->prefixlen - 1);
        return;
    case T_SAY:
        if (!c->active)
            return;
        header(&batch, T_MESSAGE, (uint32_t)c->prefixlen + size);
        put(&batch, c->prefix, c->prefixlen);
        put(&batch, p, size);
        return;
    case T_ECHO:
    case T_PING:
        header(reply, type == T_ECHO ? T_ECHO : T_PONG, size);
        put(reply, p, size);
        return;
    default:
        return;
    }
}

static void readable(Conn *c)
{
    static uint8_t buf[HEADER + MAX_PAYLOAD + RBUF];
    memcpy(buf, c->partial, c->partiallen);
    ssize_t n = recv(c->fd, buf + c->partiallen, RBUF, 0);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        dropConn(c);
        return;
    }
    size_t end = c->partiallen + (size_t)n, off = 0;
    int fd = c->fd;
    while (end - off >= HEADER) {
        uint32_t h[2];
        memcpy(h, buf + off, HEADER);
        uint32_t type = ntohl(h[0]), size = ntohl(h[1]);
        if (size > MAX_PAYLOAD) {
            dropConn(c);
            return;
        }
        if (end - off - HEADER < size)
            break;
        frame(c, type, buf + off + HEADER, size);
        if (!conns[fd].used) {
            replies.len = 0;
            return;
        }
        off += HEADER + size;
    }
    if (replies.len) {
        if (c->active)
            flushBatch(); /* what was sequenced before the replies goes first */
        if (conns[fd].used)
            sendReplies(c);
        replies.len = 0;
        if (!conns[fd].used)
            return;
    }
    c->partiallen = end - off;
    memmove(c->partial, buf + off, c->partiallen);
}

static void writable(Conn *c)
{
    ssize_t sent = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
    if (sent < 0) {
        if (errno != EAGAIN)
            dropConn(c);
        return;
    }
    memmove(c->out.data, c->out.data + sent, c->out.len - (size_t)sent);
    c->out.len -= (size_t)sent;
    if (!c->out.len) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = c->fd};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: floor PORT\n");
        return 2;
    }
    conns = calloc(MAXCONN, sizeof *conns);
    active = calloc(MAXCONN, sizeof *active);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) {
        perror("listen");
        return 2;
    }
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int cfd;
                while ((cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (cfd >= MAXCONN) {
                        close(cfd);
                        continue;
                    }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[cfd] = (Conn){.fd = cfd, .used = 1};
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                }
                continue;
            }
            Conn *c = &conns[fd];
            if (c->used && (evs[i].events & EPOLLOUT))
                writable(c);
            if (c->used && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                readable(c);
        }
        flushBatch();
    }
}
