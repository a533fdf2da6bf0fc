/* hash: SipHash-1-3 under a key drawn at random once per process, for the
 * tables whose keys a client chooses (JSON object keys, peer addresses):
 * without the key nobody can compute which keys share a slot, so probe
 * chains stay short whatever is sent (see hash.h). */
#include "hash.h"

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static uint64_t sip_key[2];
static pthread_once_t sip_once = PTHREAD_ONCE_INIT;

static void sip_seed(void)
{
    unsigned char b[16];
    size_t got = 0;
    ssize_t n;
    int fd;

    while (got < sizeof(b) && (n = getrandom(b + got, sizeof(b) - got, 0)) > 0)
        got += (size_t)n;
    if (got < sizeof(b) && (fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)) >= 0) {
        while (got < sizeof(b) && (n = read(fd, b + got, sizeof(b) - got)) > 0)
            got += (size_t)n;
        close(fd);
    }
    if (got < sizeof(b)) { /* no entropy at all: still differs per process and start */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        sip_key[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
        sip_key[1] = (uint64_t)ts.tv_sec * 0xbf58476d1ce4e5b9ULL ^ (uint64_t)time(NULL);
        return;
    }
    memcpy(&sip_key[0], b, 8);
    memcpy(&sip_key[1], b + 8, 8);
}

#define SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIP_ROUND(v0, v1, v2, v3)                                                               \
    do {                                                                                       \
        v0 += v1;                                                                              \
        v1 = SIP_ROTL(v1, 13);                                                                 \
        v1 ^= v0;                                                                              \
        v0 = SIP_ROTL(v0, 32);                                                                 \
        v2 += v3;                                                                              \
        v3 = SIP_ROTL(v3, 16);                                                                 \
        v3 ^= v2;                                                                              \
        v0 += v3;                                                                              \
        v3 = SIP_ROTL(v3, 21);                                                                 \
        v3 ^= v0;                                                                              \
        v2 += v1;                                                                              \
        v1 = SIP_ROTL(v1, 17);                                                                 \
        v1 ^= v2;                                                                              \
        v2 = SIP_ROTL(v2, 32);                                                                 \
    } while (0)

/* SipHash-1-3 of the n bytes at p under sip_key: one compression round per
 * 8-byte word, three finalization rounds, the length in the last word. */
static uint64_t sip_hash(const unsigned char *p, size_t n)
{
    uint64_t v0 = sip_key[0] ^ 0x736f6d6570736575ULL, v1 = sip_key[1] ^ 0x646f72616e646f6dULL;
    uint64_t v2 = sip_key[0] ^ 0x6c7967656e657261ULL, v3 = sip_key[1] ^ 0x7465646279746573ULL;
    uint64_t m, last = (uint64_t)n << 56;
    size_t i, tail = n & 7;

    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&m, p + i, 8); /* the spec's word on little-endian hosts; on others
                                * still a keyed hash, which is all we need */
        v3 ^= m;
        SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    for (i = 0; i < tail; i++)
        last |= (uint64_t)p[n - tail + i] << (8 * i);
    v3 ^= last;
    SIP_ROUND(v0, v1, v2, v3);
    v0 ^= last;
    v2 ^= 0xff;
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

void hash_init(void)
{
    pthread_once(&sip_once, sip_seed);
}

uint64_t hash_keyed(const void *p, size_t n)
{
    pthread_once(&sip_once, sip_seed);
    return sip_hash(p, n);
}
