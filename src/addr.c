/* addr: address ranges and peers (see addr.h). */
#include "addr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int addr_range_parse(const char *text, addr_range_t *out)
{
    char host[64];
    const char *slash = strchr(text, '/');
    size_t n = slash != NULL ? (size_t)(slash - text) : strlen(text);
    unsigned max;

    if (n == 0 || n >= sizeof(host))
        return -1;
    memcpy(host, text, n);
    host[n] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, host, out->net) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->net) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    out->bits = max;
    if (slash != NULL) {
        char *end;
        unsigned long b = strtoul(slash + 1, &end, 10);

        if (slash[1] < '0' || slash[1] > '9' || *end != '\0' || b > max)
            return -1;
        out->bits = (unsigned)b;
    }
    return 0;
}

/* The address of a peer text into ip; its family, or -1. A v4-mapped v6
 * address comes back as AF_INET. */
static int addr_peer_parse(const char *peer, unsigned char ip[16])
{
    char host[64];
    const char *end;
    size_t n;

    if (peer[0] == '[') {
        end = strchr(peer, ']');
        peer++;
    } else {
        end = strrchr(peer, ':');
    }
    if (end == NULL || (n = (size_t)(end - peer)) == 0 || n >= sizeof(host))
        return -1;
    memcpy(host, peer, n);
    host[n] = '\0';
    if (inet_pton(AF_INET, host, ip) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, host, ip) != 1)
        return -1;
    if (memcmp(ip, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
        memmove(ip, ip + 12, 4);
        return AF_INET;
    }
    return AF_INET6;
}

static int addr_in_range(const addr_range_t *r, int family, const unsigned char *ip)
{
    unsigned full = r->bits / 8, rest = r->bits % 8;

    if (family != r->family || memcmp(ip, r->net, full) != 0)
        return 0;
    return rest == 0 || ((ip[full] ^ r->net[full]) & (0xff00 >> rest) & 0xff) == 0;
}

int addr_peer_allowed(const char *peer, char *const *ranges, size_t n)
{
    unsigned char ip[16];
    addr_range_t r;
    int family = addr_peer_parse(peer, ip);
    size_t i;

    for (i = 0; family > 0 && i < n; i++)
        if (addr_range_parse(ranges[i], &r) == 0 && addr_in_range(&r, family, ip))
            return 1;
    return 0;
}
