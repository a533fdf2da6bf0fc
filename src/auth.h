/* auth: the token keys of dnoded.conf (auth_key, auth_previous_key and
 * their checks) loaded from their files, and the verification of one
 * token against them. Loaded where the config is (master, dnoded -t) and
 * shared read-only by the workers it forks; no session state here. */
#ifndef DNODED_AUTH_H
#define DNODED_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "json.h"

typedef struct auth auth_t;

/* The keys cfg names. NULL with a reason naming the key file in err when
 * one cannot be loaded; an auth_t that verifies nothing when auth_key is
 * empty. */
auth_t *auth_load(const config_t *cfg, char *err, size_t errlen);
void auth_free(auth_t *a);
/* Whether tokens are taken at all (auth_key set). */
int auth_enabled(const auth_t *a);

#define AUTH_MAX_TOKEN 8192

/* Verify token[0..len) at now (seconds since the epoch): its claims
 * (caller frees) and *exp, or NULL with a reason safe to send to the
 * client in why ("token expired", "wrong audience", ...). */
json_t *auth_verify(const auth_t *a, const char *token, size_t len, int64_t now, int64_t *exp,
                    char *why, size_t whylen);

#endif
