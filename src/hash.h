/* hash: a keyed hash for tables whose keys clients choose. SipHash-1-3
 * under a secret drawn once per process (getrandom(2), else /dev/urandom,
 * else the clock and pid): values differ between processes, so it is not
 * for anything shared across workers. Thread-safe. */
#ifndef DNODED_HASH_H
#define DNODED_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t hash_keyed(const void *p, size_t n);

#endif
