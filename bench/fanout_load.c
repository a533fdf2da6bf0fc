/* fanout_load: the load generator of bench/fanout.sh. Opens SUBS raw DNode
 * TCP sessions, round-robin over the given dnoded addresses, subscribes
 * them all to one channel, then one publisher session sends MSGS messages
 * at RATE per second, each carrying its send time. One epoll loop reads
 * every session, so the client keeps up where a Node.js one saturates
 * first; every delivery's latency is taken on the same monotonic clock.
 * Two latencies per delivery: when this program read it (p50_ms, p99_ms,
 * max_ms), and when it arrived in the subscriber's socket, from the
 * kernel's receive timestamp (SO_TIMESTAMPNS; arrival_p50_ms,
 * arrival_p99_ms). They differ by the time this one process, sharing the
 * machine's cores with the server, takes to come round to a socket.
 *
 *   fanout_load HOST:PORT[,HOST:PORT...] SUBS MSGS RATE
 *
 * Prints one JSON line: subs, msgs, rate, expected, delivered, seconds,
 * delivered_per_s, p50_ms, p99_ms, max_ms, arrival_p50_ms, arrival_p99_ms.
 * With FANOUT_TOKEN set, every session first calls auth with it; with
 * FANOUT_TYPE set, the publisher saves each message with create (that
 * model, stored and pushed by the server) instead of publish, so that the
 * server's per-subscriber permission checks are on the path.
 * Exits 1 on any failure. Not part of the daemon or the tests. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define URL "/bench/fanout"
#define MAX_TARGETS 8
#define LINE_MAX_BYTES 4096
#define DEADLINE_US (120 * 1000000LL)

typedef struct sub {
    int fd;
    int warm;
    size_t partial;
    char line[LINE_MAX_BYTES];
} sub_t;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* CLOCK_REALTIME minus CLOCK_MONOTONIC, to put the kernel's receive
 * timestamps (real time) on the monotonic clock of the send times. */
static int64_t realtime_offset_us(void)
{
    struct timespec rt, mt;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mt);
    return ((int64_t)rt.tv_sec - mt.tv_sec) * 1000000 + (rt.tv_nsec - mt.tv_nsec) / 1000;
}

/* read() that also returns the arrival time of the bytes (monotonic us),
 * or t_read when the kernel gave none. */
static ssize_t read_stamped(int fd, char *buf, size_t len, int64_t offset, int64_t *arrival)
{
    struct iovec iov = {buf, len};
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh;
    struct cmsghdr *c;
    ssize_t n;

    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    n = recvmsg(fd, &mh, 0);
    *arrival = 0;
    for (c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            *arrival = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - offset;
        }
    }
    return n;
}

static void die(const char *what)
{
    fprintf(stderr, "fanout_load: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
    exit(1);
}

static int dial(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
        die("connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
    return fd;
}

static void send_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("write");
        s += n;
        len -= (size_t)n;
    }
}

static const char *create_type; /* FANOUT_TYPE */

static void publish(int fd, int64_t k, int warm)
{
    char buf[512];
    int n;

    if (create_type != NULL)
        n = snprintf(buf, sizeof(buf),
                     "{\"method\":\"create\",\"arguments\":[{\"%s\":%lld,\"t\":%lld},"
                     "{\"type\":\"%s\",\"url\":\"" URL "\"},\"[Function]\"],"
                     "\"callbacks\":{\"9\":[\"2\"]},\"links\":[]}\n",
                     warm ? "w" : "k", warm ? 1LL : (long long)k, (long long)now_us(),
                     create_type);
    else if (warm)
        n = snprintf(buf, sizeof(buf),
                     "{\"method\":\"publish\",\"arguments\":[{\"w\":1},{\"url\":\"" URL
                     "\",\"method\":\"create\"}],\"callbacks\":{},\"links\":[]}\n");
    else
        n = snprintf(buf, sizeof(buf),
                     "{\"method\":\"publish\",\"arguments\":[{\"k\":%lld,\"t\":%lld},{\"url\":\"" URL
                     "\",\"method\":\"create\"}],\"callbacks\":{},\"links\":[]}\n",
                     (long long)k, (long long)now_us());
    send_all(fd, buf, (size_t)n);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    static const char hello[] =
        "{\"method\":\"methods\",\"arguments\":[{\"created\":\"[Function]\"}],"
        "\"callbacks\":{\"0\":[\"0\",\"created\"]},\"links\":[]}\n"
        "{\"method\":\"subscribe\",\"arguments\":[\"" URL "\",\"[Function]\"],"
        "\"callbacks\":{\"1\":[\"1\"]},\"links\":[]}\n";
    struct sockaddr_in targets[MAX_TARGETS];
    size_t ntargets = 0, nsubs, nmsgs, i, acked = 0, warm = 0, nlat = 0, expected;
    double rate;
    char *list, *tok, *save = NULL;
    sub_t *subs;
    uint32_t *lat, *arr;
    int ep, pub;
    int64_t offset = realtime_offset_us();
    int64_t start = now_us(), first = 0, last_recv = 0, next_warm = 0, end_by = 0;
    size_t sent = 0;
    static char scratch[1 << 18];

    if (argc != 5) {
        fprintf(stderr, "usage: fanout_load HOST:PORT[,HOST:PORT...] SUBS MSGS RATE\n");
        return 2;
    }
    list = strdup(argv[1]);
    for (tok = strtok_r(list, ",", &save); tok != NULL && ntargets < MAX_TARGETS;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        if (colon == NULL)
            die("bad address");
        *colon = '\0';
        memset(&targets[ntargets], 0, sizeof(targets[0]));
        targets[ntargets].sin_family = AF_INET;
        targets[ntargets].sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, tok, &targets[ntargets].sin_addr) != 1)
            die("bad address");
        ntargets++;
    }
    nsubs = strtoul(argv[2], NULL, 10);
    nmsgs = strtoul(argv[3], NULL, 10);
    rate = atof(argv[4]);
    expected = nsubs * nmsgs;
    subs = calloc(nsubs, sizeof(*subs));
    lat = calloc(expected + 1, sizeof(*lat));
    arr = calloc(expected + 1, sizeof(*arr));
    ep = epoll_create1(0);
    if (ntargets == 0 || nsubs == 0 || rate <= 0 || subs == NULL || lat == NULL || arr == NULL ||
        ep < 0)
        die("setup");
    const char *token = getenv("FANOUT_TOKEN");
    char auth[2048] = "";
    size_t authlen = 0;
    create_type = getenv("FANOUT_TYPE");
    if (token != NULL && token[0] != '\0') {
        int n = snprintf(auth, sizeof(auth),
                         "{\"method\":\"auth\",\"arguments\":[\"%s\",\"[Function]\"],"
                         "\"callbacks\":{\"8\":[\"1\"]},\"links\":[]}\n",
                         token);
        if (n < 0 || (size_t)n >= sizeof(auth))
            die("FANOUT_TOKEN too long");
        authlen = (size_t)n;
    }
    for (i = 0; i < nsubs; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
        subs[i].fd = dial(&targets[i % ntargets]);
        if (authlen > 0)
            send_all(subs[i].fd, auth, authlen);
        send_all(subs[i].fd, hello, sizeof(hello) - 1);
        fcntl(subs[i].fd, F_SETFL, O_NONBLOCK);
        if (epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev) < 0)
            die("epoll_ctl");
    }
    pub = dial(&targets[0]);
    {
        static const char pub_hello[] =
            "{\"method\":\"methods\",\"arguments\":[{}],\"callbacks\":{},\"links\":[]}\n";
        if (authlen > 0)
            send_all(pub, auth, authlen);
        send_all(pub, pub_hello, sizeof(pub_hello) - 1);
    }
    {
        /* The publisher's own replies are not read: drop them unread. */
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
        fcntl(pub, F_SETFL, O_NONBLOCK);
        if (epoll_ctl(ep, EPOLL_CTL_ADD, pub, &ev) < 0)
            die("epoll_ctl");
    }
    for (;;) {
        struct epoll_event evs[256];
        int64_t now = now_us(), timeout_us = 20000;
        int n, e;

        if (now - start > DEADLINE_US) {
            fprintf(stderr, "fanout_load: deadline: acked %zu, warm %zu, delivered %zu\n", acked,
                    warm, nlat);
            return 1;
        }
        if (acked == nsubs && next_warm == 0) {
            fprintf(stderr, "subscribed\n"); /* fanout.sh looks at the split now */
            fflush(stderr);
        }
        if (acked == nsubs && warm < nsubs && now >= next_warm) {
            publish(pub, 0, 1); /* subscriptions may take a moment (Redis) */
            next_warm = now + 200000;
        }
        if (warm == nsubs && first == 0) {
            first = now + 300000;
        }
        if (first != 0 && sent < nmsgs) {
            int64_t due = first + (int64_t)(sent * 1e6 / rate);
            if (now >= due) {
                publish(pub, (int64_t)sent, 0);
                sent++;
                if (sent == nmsgs)
                    end_by = now_us() + 30000000;
                continue;
            }
            timeout_us = due - now;
        }
        if (sent == nmsgs && (nlat >= expected || now > end_by))
            break;
        n = epoll_wait(ep, evs, 256, (int)(timeout_us / 1000) + 1);
        for (e = 0; e < n; e++) {
            sub_t *s;
            ssize_t got;
            if (evs[e].data.u64 == UINT64_MAX) {
                while (read(pub, scratch, sizeof(scratch)) > 0)
                    ;
                continue;
            }
            s = &subs[evs[e].data.u64];
            int64_t t_arr;
            while ((got = read_stamped(s->fd, scratch, sizeof(scratch), offset, &t_arr)) > 0) {
                int64_t t_recv = now_us();
                if (t_arr == 0 || t_arr > t_recv)
                    t_arr = t_recv;
                ssize_t p;
                for (p = 0; p < got; p++) {
                    char c = scratch[p];
                    if (c != '\n') {
                        if (s->partial < LINE_MAX_BYTES - 1)
                            s->line[s->partial++] = c;
                        continue;
                    }
                    s->line[s->partial] = '\0';
                    if (strncmp(s->line, "{\"method\":\"created\"", 19) == 0) {
                        char *t = strstr(s->line, "\"t\":");
                        if (strstr(s->line, "\"w\":1") != NULL) {
                            if (!s->warm) {
                                s->warm = 1;
                                warm++;
                            }
                        } else if (t != NULL && nlat < expected) {
                            int64_t t_sent = strtoll(t + 4, NULL, 10);
                            arr[nlat] = (uint32_t)(t_arr > t_sent ? t_arr - t_sent : 0);
                            lat[nlat++] = (uint32_t)(t_recv - t_sent);
                            last_recv = t_recv;
                        }
                    } else if (strncmp(s->line, "{\"method\":1,", 12) == 0) {
                        acked++;
                    }
                    s->partial = 0;
                }
                /* Short read: the socket is drained. Asking again would only
                 * return EAGAIN (epoll is level-triggered and says so if
                 * more comes), a second syscall per delivery. */
                if ((size_t)got < sizeof(scratch))
                    break;
            }
            if (got == 0)
                die("a session was closed by the server");
        }
    }
    qsort(lat, nlat, sizeof(*lat), cmp_u32);
    qsort(arr, nlat, sizeof(*arr), cmp_u32);
    {
        double seconds = (double)(last_recv - first) / 1e6;
        printf("{\"subs\":%zu,\"msgs\":%zu,\"rate\":%g,\"expected\":%zu,\"delivered\":%zu,"
               "\"seconds\":%.3f,\"delivered_per_s\":%.0f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,"
               "\"max_ms\":%.2f,\"arrival_p50_ms\":%.2f,\"arrival_p99_ms\":%.2f}\n",
               nsubs, nmsgs, rate, expected, nlat, seconds, nlat / seconds,
               nlat ? lat[nlat / 2] / 1000.0 : 0, nlat ? lat[(size_t)(nlat * 0.99)] / 1000.0 : 0,
               nlat ? lat[nlat - 1] / 1000.0 : 0, nlat ? arr[nlat / 2] / 1000.0 : 0,
               nlat ? arr[(size_t)(nlat * 0.99)] / 1000.0 : 0);
    }
    fflush(stdout);
    return nlat == expected ? 0 : 1;
}
