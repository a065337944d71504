/*
 * loadgen: a small C load generator for the chatd wire protocol
 * (/work/shared/PROTOCOL.md), so that benchmark figures measure the server
 * and not the Python load tool (which saturates far below the servers).
 *
 *   loadgen fanout HOST PORT R S SIZE WINDOW SECONDS
 *   loadgen echo   HOST PORT N DEPTH SECONDS
 *
 * fanout: R receivers and S senders (R+S users, every one of them receives
 * every MESSAGE) complete HELLO -> WELCOME -> READY -> own JOIN.  Once all
 * are ACTIVE, each sender keeps at most WINDOW of its own SAYs unacknowledged
 * (its own MESSAGE copy is the acknowledgement).  SAY text is
 * "sender.seq.timestamp_ns." padded with 'x' to SIZE bytes.  Every user
 * checks every sender's sequence numbers (no gap, duplicate or reorder) and
 * records send-to-receipt latency.  After the measured window the senders
 * stop and everything in flight is drained, so messages lost at the end of
 * a stream count as gaps too.
 *
 * echo: N connections each keep DEPTH ECHO frames in flight, payload length
 * pseudo-random in 0..1016 (fixed seed), every reply compared byte for byte,
 * in order, with what was sent.
 *
 * Load runs for a 0.5 s warm-up, then SECONDS are measured; one JSON line
 * goes to stdout.  If LOADGEN_SERVER_PID is set, the server's CPU time
 * (utime+stime from /proc/PID/stat) over exactly the measured window is
 * reported as server_cpu_s.  Exit status: 0 clean, 1 integrity failures,
 * 2 usage or set-up failure.
 *
 * Single-threaded: one epoll loop, non-blocking sockets, TCP_NODELAY.  Reads
 * go into one large shared buffer (the partial frame left over from the
 * previous read of that connection is copied in front first, at most 1023
 * bytes); writes are appended to per-connection output buffers and flushed
 * once per loop iteration, so a sender refilling its window from many acks
 * in one read costs one write() call.
 *
 * Build: gcc -O2 -std=c11 -Wall -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    T_ECHO = 1, T_HELLO = 2, T_WELCOME = 3, T_READY = 4, T_SAY = 5,
    T_MESSAGE = 6, T_JOIN = 7, T_LEAVE = 8, T_PING = 9, T_PONG = 10,
    T_ERROR = 11, T_NOTICE = 16,
};
#define MAX_PAYLOAD 1016
#define HEADER 8
#define RBUF_SIZE (256 * 1024)
#define WARMUP_NS 500000000LL
#define DRAIN_NS 5000000000LL
#define SETUP_NS 120000000000LL
#define MAX_PENDING 64 /* handshakes in progress at once: Twisted's backlog is 50 */

enum { S_CONNECTING, S_HELLO_SENT, S_READY_SENT, S_ACTIVE, S_DEAD };
enum { P_SETUP, P_RUN, P_DRAIN, P_DONE };

typedef struct {
    int fd;
    int index;             /* user number (senders first) or echo connection number */
    int sender;            /* sender number, -1 for a receiver */
    int state;
    int epollout;          /* EPOLLOUT is registered (a write hit EAGAIN) */
    int dirty;             /* on the flush list */
    uint8_t *out;          /* pending output: out[outoff .. outlen) */
    size_t outoff, outlen, outcap;
    uint8_t part[HEADER + MAX_PAYLOAD]; /* incomplete frame left by the last read */
    size_t partlen;
    char name[24];
    char join[64];         /* our own JOIN payload: id.color.name */
    size_t joinlen;
    uint32_t id;           /* from WELCOME */
    /* fan-out */
    uint64_t seq;          /* next sequence number to send */
    int inflight;          /* own SAYs not yet acknowledged */
    uint64_t *expect;      /* [S]: next sequence number expected from each sender */
    uint32_t *holes;       /* [S]: numbers skipped and not yet seen */
    /* echo */
    uint64_t gen, chk;     /* PRNG states: generating requests, replaying them to check */
    int64_t *stamps;       /* ring of DEPTH send times, replies come back in order */
    int head, count;
} Conn;

/* ---- globals: one run, one process ---- */
static int ep;
static Conn *conns;
static int nconns;
static Conn **dirtyList;
static int ndirty;
static uint8_t *rbuf;
static int phase = P_SETUP;
static int64_t tStart, tEnd;       /* measured window */
static int mode_echo;
static int R, S, SIZE, WINDOW, DEPTH;
static double SECONDS;
static uint8_t pattern[4096];      /* ECHO payloads are slices of this */
static int pending, active, opened;
static struct sockaddr_in addr;

static uint64_t deliveries, bytesIn, sentTotal;
static uint64_t gaps, dups, reorders, unexpected, errorsSeen, disconnects,
    mismatches, framing;
static uint64_t *sentBy;           /* [S] messages each sender sent */
static int examples;

/* ---- latency histogram: log-linear, microseconds, ~1.6% resolution ---- */
#define HBUCKETS (64 * 64)
static uint64_t hist[HBUCKETS];
static uint64_t histCount, histMaxUs;

static int bucketOf(uint64_t us)
{
    if (us < 128)
        return (int)us;
    int msb = 63 - __builtin_clzll(us);
    int shift = msb - 6;           /* keep the top 7 bits: 64 sub-buckets per octave */
    int idx = (shift + 1) * 64 + (int)(us >> shift) - 64;
    return idx < HBUCKETS ? idx : HBUCKETS - 1;
}

static double bucketMidUs(int idx)
{
    if (idx < 128)
        return idx;
    int shift = idx / 64 - 1;
    uint64_t lo = (uint64_t)(idx % 64 + 64) << shift;
    return (double)lo + (double)((1ULL << shift) - 1) / 2.0;
}

static void record(int64_t ns)
{
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    hist[bucketOf(us)]++;
    histCount++;
    if (us > histMaxUs)
        histMaxUs = us;
}

static double percentileUs(double p)
{
    if (!histCount)
        return -1;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)histCount);
    if (rank >= histCount)
        rank = histCount - 1;
    uint64_t seen = 0;
    for (int i = 0; i < HBUCKETS; i++) {
        seen += hist[i];
        if (seen > rank) {
            double v = bucketMidUs(i);
            return v > (double)histMaxUs ? (double)histMaxUs : v;
        }
    }
    return (double)histMaxUs;
}

/* ---- small helpers ---- */
static int64_t nowNs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* A few examples of what went wrong, on stderr, so a failure can be read. */
static void example(const Conn *c, const char *fmt, ...)
{
    if (examples >= 20)
        return;
    examples++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: %s: ", c->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static double serverCpuS(void)
{
    const char *pid = getenv("LOADGEN_SERVER_PID");
    if (!pid || !*pid)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return -1;
    unsigned long long ut, st;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt
       majflt cmajflt utime stime */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double selfCpuS(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* ---- output: append, then flush once per loop iteration ---- */
static uint8_t *reserve(Conn *c, size_t n)
{
    if (c->outoff && c->outoff == c->outlen)
        c->outoff = c->outlen = 0;
    if (c->outlen + n > c->outcap) {
        if (c->outoff) { /* compact before growing */
            memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
            c->outlen -= c->outoff;
            c->outoff = 0;
        }
        if (c->outlen + n > c->outcap) {
            size_t cap = c->outcap ? c->outcap : 4096;
            while (cap < c->outlen + n)
                cap *= 2;
            c->out = realloc(c->out, cap);
            if (!c->out)
                die("out of memory");
            c->outcap = cap;
        }
    }
    uint8_t *p = c->out + c->outlen;
    c->outlen += n;
    if (!c->dirty) {
        c->dirty = 1;
        dirtyList[ndirty++] = c;
    }
    return p;
}

static uint8_t *frame(Conn *c, uint32_t type, uint32_t size)
{
    uint8_t *p = reserve(c, HEADER + size);
    uint32_t h[2] = {htonl(type), htonl(size)};
    memcpy(p, h, HEADER);
    return p + HEADER;
}

static void closeConn(Conn *c, const char *why)
{
    if (c->state == S_DEAD)
        return;
    if (phase != P_DONE) {
        disconnects++;
        example(c, "disconnected (%s)", why);
        if (c->state != S_ACTIVE)
            pending--; /* it was still connecting or in its handshake */
    }
    if (c->state == S_ACTIVE)
        active--;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = S_DEAD;
    c->outoff = c->outlen = 0;
}

static void setOut(Conn *c, int on)
{
    if (c->epollout == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->epollout = on;
}

static void flush(Conn *c)
{
    if (c->state == S_DEAD || c->state == S_CONNECTING)
        return;
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n > 0) {
            c->outoff += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            setOut(c, 1); /* keep the rest; write again when the socket drains */
            return;
        } else {
            closeConn(c, strerror(errno));
            return;
        }
    }
    c->outoff = c->outlen = 0;
    setOut(c, 0);
}

static void flushAll(void)
{
    for (int i = 0; i < ndirty; i++) {
        dirtyList[i]->dirty = 0;
        flush(dirtyList[i]);
    }
    ndirty = 0;
}

/* ---- connections ---- */
static void openConn(Conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = S_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    c->epollout = 1;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS)
        die("connect: %s", strerror(errno));
    pending++;
    opened++;
    if (!mode_echo) { /* HELLO waits in the buffer until the connect completes */
        size_t n = strlen(c->name);
        memcpy(frame(c, T_HELLO, (uint32_t)n), c->name, n);
    }
}

static void becameActive(Conn *c)
{
    c->state = S_ACTIVE;
    pending--;
    active++;
}

static void openMore(void)
{
    while (opened < nconns && pending < MAX_PENDING)
        openConn(&conns[opened]);
}

/* ---- fan-out ---- */
static void say(Conn *c, int64_t now)
{
    char head[64];
    int n = snprintf(head, sizeof head, "%d.%" PRIu64 ".%" PRId64 ".", c->sender, c->seq, now);
    int size = SIZE > n ? SIZE : n;
    uint8_t *p = frame(c, T_SAY, (uint32_t)size);
    memcpy(p, head, (size_t)n);
    memset(p + n, 'x', (size_t)(size - n));
    c->seq++;
    sentBy[c->sender] = c->seq;
    c->inflight++;
    sentTotal++;
}

static void fill(Conn *c, int64_t now)
{
    if (phase != P_RUN || c->sender < 0 || c->state != S_ACTIVE)
        return;
    while (c->inflight < WINDOW)
        say(c, now);
}

/* Parse a decimal field ending at '.'; returns the position after the dot. */
static const uint8_t *decimal(const uint8_t *p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    const uint8_t *start = p;
    while (p < end && *p >= '0' && *p <= '9' && p - start < 20)
        v = v * 10 + (uint64_t)(*p++ - '0');
    if (p == start || p >= end || *p != '.')
        return NULL;
    *out = v;
    return p + 1;
}

static void message(Conn *c, const uint8_t *p, uint32_t size, int64_t now)
{
    const uint8_t *end = p + size, *q;
    uint64_t id, color, sender, seq, stamp;
    /* id.color.name.text, text = sender.seq.stamp.xxx */
    if (!(q = decimal(p, end, &id)) || !(q = decimal(q, end, &color)))
        goto bad;
    q = memchr(q, '.', (size_t)(end - q)); /* names hold no dot */
    if (!q || !(q = decimal(q + 1, end, &sender)) || !(q = decimal(q, end, &seq)) ||
        !(q = decimal(q, end, &stamp)) || sender >= (uint64_t)S)
        goto bad;

    /* Sequence check: every number once, in order. */
    uint64_t want = c->expect[sender];
    if (seq == want) {
        c->expect[sender] = seq + 1;
    } else if (seq > want) {
        gaps += seq - want;
        c->holes[sender] += (uint32_t)(seq - want);
        c->expect[sender] = seq + 1;
        example(c, "sender %" PRIu64 ": got %" PRIu64 ", expected %" PRIu64, sender, seq, want);
    } else if (c->holes[sender]) {
        /* a late arrival filling a hole: reorder (approximation: a duplicate
           of a number seen while holes are open is counted here too) */
        c->holes[sender]--;
        gaps--;
        reorders++;
        example(c, "sender %" PRIu64 ": %" PRIu64 " arrived late", sender, seq);
    } else {
        dups++;
        example(c, "sender %" PRIu64 ": %" PRIu64 " again (next %" PRIu64 ")", sender, seq, want);
    }
    if (now >= tStart && now < tEnd) {
        deliveries++;
        bytesIn += HEADER + size;
        record(now - (int64_t)stamp);
    }
    if (id == c->id && c->sender >= 0) { /* our own copy: the acknowledgement */
        if ((int)sender != c->sender) {
            unexpected++;
            example(c, "own MESSAGE carries sender %" PRIu64, sender);
        }
        c->inflight--;
        fill(c, now);
    }
    return;
bad:
    unexpected++;
    example(c, "bad MESSAGE %.*s", (int)(size < 60 ? size : 60), (const char *)p);
}

static void fanoutFrame(Conn *c, uint32_t type, const uint8_t *p, uint32_t size, int64_t now)
{
    switch (type) {
    case T_MESSAGE:
        if (c->state != S_ACTIVE) {
            unexpected++;
            return;
        }
        message(c, p, size, now);
        return;
    case T_WELCOME: { /* name.id.color -> our JOIN will be id.color.name */
        const uint8_t *end = p + size, *q = memchr(p, '.', size);
        uint64_t id;
        if (c->state != S_HELLO_SENT || !q || !(q = decimal(q + 1, end, &id)))
            goto bad;
        const uint8_t *cs = q;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
        if (q != end || q == cs)
            goto bad;
        c->id = (uint32_t)id;
        c->joinlen = (size_t)snprintf(c->join, sizeof c->join, "%" PRIu64 ".%.*s.%s", id,
                                      (int)(end - cs), (const char *)cs, c->name);
        frame(c, T_READY, 0);
        c->state = S_READY_SENT;
        return;
    }
    case T_JOIN:
        if (c->state == S_READY_SENT && size == c->joinlen && !memcmp(p, c->join, size))
            becameActive(c);
        return;
    case T_ERROR:
        errorsSeen++;
        example(c, "ERROR %.*s", (int)(size < 80 ? size : 80), (const char *)p);
        if (c->sender >= 0 && c->inflight && c->state == S_ACTIVE) {
            c->inflight--; /* a refused SAY is never acknowledged */
            fill(c, now);
        }
        return;
    case T_LEAVE:
    case T_PONG:
    case T_NOTICE:
        return;
    }
bad:
    unexpected++;
    example(c, "unexpected frame type %u size %u", type, size);
}

/* ---- echo ---- */
static void echoRequest(Conn *c, int64_t now)
{
    uint64_t r = splitmix(&c->gen);
    uint32_t len = (uint32_t)(r % (MAX_PAYLOAD + 1));
    uint32_t off = (uint32_t)(r >> 32) % (uint32_t)(sizeof pattern - MAX_PAYLOAD);
    memcpy(frame(c, T_ECHO, len), pattern + off, len);
    c->stamps[(c->head + c->count) % DEPTH] = now;
    c->count++;
    sentTotal++;
}

static void echoFrame(Conn *c, uint32_t type, const uint8_t *p, uint32_t size, int64_t now)
{
    if (type == T_ERROR) {
        errorsSeen++;
        example(c, "ERROR %.*s", (int)(size < 80 ? size : 80), (const char *)p);
        return;
    }
    if (type != T_ECHO || !c->count) {
        unexpected++;
        example(c, "unexpected frame type %u size %u", type, size);
        return;
    }
    /* Replay the generator: the reply must be the oldest request, byte for byte. */
    uint64_t r = splitmix(&c->chk);
    uint32_t len = (uint32_t)(r % (MAX_PAYLOAD + 1));
    uint32_t off = (uint32_t)(r >> 32) % (uint32_t)(sizeof pattern - MAX_PAYLOAD);
    if (size != len || memcmp(p, pattern + off, len)) {
        mismatches++;
        example(c, "ECHO reply of %u bytes does not match request of %u", size, len);
    }
    int64_t sentAt = c->stamps[c->head];
    c->head = (c->head + 1) % DEPTH;
    c->count--;
    if (now >= tStart && now < tEnd) {
        deliveries++;
        bytesIn += HEADER + size;
        record(now - sentAt);
    }
    if (phase == P_RUN)
        echoRequest(c, now);
}

/* ---- reading: frames out of one large buffer ---- */
static void readable(Conn *c)
{
    memcpy(rbuf, c->part, c->partlen);
    ssize_t n = recv(c->fd, rbuf + c->partlen, RBUF_SIZE, 0);
    if (n == 0) {
        closeConn(c, "closed by server");
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            closeConn(c, strerror(errno));
        return;
    }
    int64_t now = nowNs(); /* one clock read per read(): the receipt time */
    const uint8_t *p = rbuf, *end = rbuf + c->partlen + n;
    while (end - p >= HEADER) {
        uint32_t type = be32(p), size = be32(p + 4);
        if (size > MAX_PAYLOAD) {
            framing++;
            example(c, "frame of %u bytes", size);
            closeConn(c, "framing violation");
            return;
        }
        if ((size_t)(end - p) < HEADER + size)
            break;
        if (mode_echo)
            echoFrame(c, type, p + HEADER, size, now);
        else
            fanoutFrame(c, type, p + HEADER, size, now);
        if (c->state == S_DEAD)
            return;
        p += HEADER + size;
    }
    c->partlen = (size_t)(end - p);
    memcpy(c->part, p, c->partlen);
}

static void writable(Conn *c)
{
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            closeConn(c, strerror(err));
            return;
        }
        c->state = S_HELLO_SENT;
        if (mode_echo)
            becameActive(c); /* ECHO needs no handshake */
    }
    flush(c);
}

/* ---- the run ---- */
static void startLoad(int64_t now)
{
    phase = P_RUN;
    tStart = now + WARMUP_NS;
    tEnd = tStart + (int64_t)(SECONDS * 1e9);
    for (int i = 0; i < nconns; i++) {
        Conn *c = &conns[i];
        if (c->state != S_ACTIVE)
            continue;
        if (mode_echo)
            for (int k = 0; k < DEPTH; k++)
                echoRequest(c, now);
        else
            fill(c, now);
    }
}

/* Fan-out drain: has every live user seen every message sent? */
static int drained(void)
{
    for (int i = 0; i < nconns; i++) {
        Conn *c = &conns[i];
        if (c->state != S_ACTIVE)
            continue;
        for (int s = 0; s < S; s++)
            if (c->expect[s] < sentBy[s])
                return 0;
    }
    return 1;
}

static void usage(void)
{
    die("usage: loadgen fanout HOST PORT R S SIZE WINDOW SECONDS\n"
        "       loadgen echo HOST PORT N DEPTH SECONDS");
}

static int intArg(const char *s, int lo, int hi, const char *what)
{
    char *e;
    long v = strtol(s, &e, 10);
    if (*e || v < lo || v > hi)
        die("%s must be an integer in %d..%d", what, lo, hi);
    return (int)v;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "fanout") && argc == 9) {
        R = intArg(argv[4], 0, 1000000, "R");
        S = intArg(argv[5], 0, 100000, "S");
        SIZE = intArg(argv[6], 1, 900, "SIZE");
        WINDOW = intArg(argv[7], 1, 1000000, "WINDOW");
        SECONDS = atof(argv[8]);
        nconns = R + S;
    } else if (!strcmp(argv[1], "echo") && argc == 7) {
        mode_echo = 1;
        nconns = intArg(argv[4], 1, 1000000, "N");
        DEPTH = intArg(argv[5], 1, 1000000, "DEPTH");
        SECONDS = atof(argv[6]);
    } else {
        usage();
    }
    if (!(SECONDS > 0))
        die("SECONDS must be positive");
    if (nconns < 1)
        die("nothing to do");
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)intArg(argv[3], 1, 65535, "PORT"));
    if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1)
        die("HOST must be an IPv4 address");
    signal(SIGPIPE, SIG_IGN);

    /* One descriptor per connection: raise the soft limit to the hard one. */
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < (rlim_t)nconns + 16)
        die("need %d descriptors, the limit is %lu", nconns + 16, (unsigned long)rl.rlim_cur);

    uint64_t seed = 1;
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (uint8_t)splitmix(&seed);
    rbuf = malloc(RBUF_SIZE + HEADER + MAX_PAYLOAD);
    conns = calloc((size_t)nconns, sizeof *conns);
    dirtyList = calloc((size_t)nconns, sizeof *dirtyList);
    sentBy = calloc((size_t)(S ? S : 1), sizeof *sentBy);
    if (!rbuf || !conns || !dirtyList || !sentBy)
        die("out of memory");
    for (int i = 0; i < nconns; i++) {
        Conn *c = &conns[i];
        c->index = i;
        c->sender = !mode_echo && i < S ? i : -1;
        if (mode_echo) {
            snprintf(c->name, sizeof c->name, "echo%d", i);
            c->gen = c->chk = 1000003ULL * (uint64_t)(i + 1); /* fixed seed per connection */
            c->stamps = calloc((size_t)DEPTH, sizeof *c->stamps);
        } else {
            snprintf(c->name, sizeof c->name, c->sender >= 0 ? "s%d" : "r%d",
                     c->sender >= 0 ? i : i - S);
            c->expect = calloc((size_t)(S ? S : 1), sizeof *c->expect);
            c->holes = calloc((size_t)(S ? S : 1), sizeof *c->holes);
        }
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));

    int64_t t0 = nowNs(), drainStart = 0;
    double cpu0 = -1, cpu1 = -1, self0 = 0, self1 = 0;
    int64_t measuredStart = 0, measuredEnd = 0;
    openMore();
    struct epoll_event events[1024];
    while (phase != P_DONE) {
        flushAll();
        int n = epoll_wait(ep, events, 1024, 2);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            Conn *c = events[i].data.ptr;
            uint32_t ev = events[i].events;
            if (c->state != S_DEAD && (ev & EPOLLOUT))
                writable(c);
            if (c->state != S_DEAD && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                readable(c);
        }
        int64_t now = nowNs();
        switch (phase) {
        case P_SETUP:
            openMore();
            if (active + disconnects >= (uint64_t)nconns && opened == nconns) {
                if (!active)
                    die("no connection became ready");
                startLoad(now);
            } else if (now - t0 > SETUP_NS) {
                die("set-up timed out: %d of %d ready", active, nconns);
            }
            break;
        case P_RUN:
            if (!measuredStart && now >= tStart) {
                measuredStart = now;
                cpu0 = serverCpuS();
                self0 = selfCpuS();
            }
            if (now >= tEnd) {
                measuredEnd = now;
                cpu1 = serverCpuS();
                self1 = selfCpuS();
                phase = P_DRAIN; /* senders stop refilling; echo stops requesting */
                drainStart = now;
            }
            break;
        case P_DRAIN:
            if (mode_echo || drained() || now - drainStart > DRAIN_NS)
                phase = P_DONE;
            break;
        }
    }

    /* Whatever a live user has not seen by the end of the drain is lost. */
    for (int i = 0; i < nconns && !mode_echo; i++) {
        Conn *c = &conns[i];
        if (c->state != S_ACTIVE)
            continue;
        for (int s = 0; s < S; s++)
            if (c->expect[s] < sentBy[s]) {
                example(c, "sender %d: %" PRIu64 " of %" PRIu64 " never arrived", s,
                            sentBy[s] - c->expect[s], sentBy[s]);
                gaps += sentBy[s] - c->expect[s];
            }
    }
    /* Echo stops at the window's end: replies still in flight are not waited for. */
    phase = P_DONE;
    for (int i = 0; i < nconns; i++)
        if (conns[i].state != S_DEAD)
            closeConn(&conns[i], "end");

    double secs = (double)(measuredEnd - measuredStart) / 1e9;
    if (secs <= 0)
        secs = SECONDS;
    double p50 = percentileUs(50), p90 = percentileUs(90), p99 = percentileUs(99);
    double mx = histCount ? (double)histMaxUs : -1;
    uint64_t failures = gaps + dups + reorders + unexpected + errorsSeen + disconnects +
                        mismatches + framing;
    char cpu[64] = "null";
    if (cpu0 >= 0 && cpu1 >= 0)
        snprintf(cpu, sizeof cpu, "%.3f", cpu1 - cpu0);
    if (mode_echo)
        printf("{\"mode\":\"echo\",\"connections\":%d,\"depth\":%d,", nconns, DEPTH);
    else
        printf("{\"mode\":\"fanout\",\"receivers\":%d,\"senders\":%d,\"size\":%d,\"window\":%d,",
               R, S, SIZE, WINDOW);
    printf("\"seconds\":%.3f,\"%s\":%.1f,\"%s\":%" PRIu64 ",\"bytes\":%" PRIu64
           ",\"mb_per_s\":%.3f,\"sent\":%" PRIu64 ",",
           secs, mode_echo ? "round_trips_per_s" : "deliveries_per_s", (double)deliveries / secs,
           mode_echo ? "round_trips" : "deliveries", deliveries, bytesIn,
           (double)bytesIn / secs / 1e6, sentTotal);
    if (histCount)
        printf("\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
               "\"latency_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"max\":%.0f},",
               p50 / 1000, p90 / 1000, p99 / 1000, mx / 1000, p50, p90, p99, mx);
    else /* nothing measured */
        printf("\"p50_ms\":null,\"p90_ms\":null,\"p99_ms\":null,\"max_ms\":null,"
               "\"latency_us\":{\"p50\":null,\"p90\":null,\"p99\":null,\"max\":null},");
    printf("\"gaps\":%" PRIu64 ",\"dups\":%" PRIu64 ",\"reorders\":%" PRIu64
           ",\"mismatches\":%" PRIu64 ",\"unexpected\":%" PRIu64 ",\"framing\":%" PRIu64
           ",\"errors\":%" PRIu64 ",\"disconnects\":%" PRIu64 ",\"integrity_failures\":%" PRIu64
           ",\"server_cpu_s\":%s,\"load_cpu_s\":%.3f,\"setup_s\":%.3f}\n",
           gaps, dups, reorders, mismatches, unexpected, framing, errorsSeen, disconnects,
           failures, cpu, self1 - self0, (double)(tStart - WARMUP_NS - t0) / 1e9);
    return failures ? 1 : 0;
}
