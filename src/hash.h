/* hash: a keyed hash for tables whose keys clients choose. SipHash-1-3
 * under a secret drawn once (getrandom(2), else /dev/urandom, else the
 * clock and pid). The master draws it (hash_init) before it forks, so
 * every worker of one master computes the same values and may use them in
 * memory the workers share; another master (another host, a restart) has
 * another secret, so values never leave the host. Thread-safe. */
#ifndef DNODED_HASH_H
#define DNODED_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t hash_keyed(const void *p, size_t n);
void hash_init(void); /* draw the secret now (before fork), if not yet drawn */

#endif
