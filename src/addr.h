/* addr: IP address ranges ("127.0.0.0/8", "::1", "10.1.2.3") and whether a
 * peer (as conn names it: "1.2.3.4:5000" or "[::1]:5000") is in one, for
 * the keys that allow by address (metrics_allow). IPv4-mapped IPv6 peers
 * match IPv4 ranges. Knows nothing of sockets or config files. */
#ifndef DNODED_ADDR_H
#define DNODED_ADDR_H

#include <stddef.h>

typedef struct addr_range {
    int family;              /* AF_INET or AF_INET6 */
    unsigned char net[16];   /* the first 4 bytes for AF_INET */
    unsigned bits;           /* prefix length */
} addr_range_t;

/* Parse "address" or "address/bits". 0, or -1 when it is not one. */
int addr_range_parse(const char *text, addr_range_t *out);
/* Whether peer ("ip:port" or "[ip6]:port") is in one of the n ranges
 * (texts that addr_range_parse accepts). 1 or 0; 0 for a peer that is not
 * an IP address. */
int addr_peer_allowed(const char *peer, char *const *ranges, size_t n);

#endif
