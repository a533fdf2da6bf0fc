/* bus: channels. Keeps each channel's local subscribers, delivers
 * published changes to them in one order, and pushes presence
 * (subscribed/unsubscribed with the online count). Does not know the
 * wire protocol beyond building the pushed calls. */
#ifndef DNODED_BUS_H
#define DNODED_BUS_H

#include <stddef.h>

#include "json.h"
#include "session.h"

struct worker;
typedef struct bus bus_t;

bus_t *bus_new(struct worker *w);
void bus_free(bus_t *b);

/* Join/leave a channel. Return 0 on success, 1 when nothing changed
 * (already joined / not joined), -1 on error (limit, allocation). */
int bus_subscribe(bus_t *b, session_t *s, const char *channel);
int bus_unsubscribe(bus_t *b, session_t *s, const char *channel);
/* Leave every channel (disconnect). */
void bus_leave_all(bus_t *b, session_t *s);

/* Push method(doc, opt) to every subscriber of channel, each exactly once,
 * in the same order for all of them. opt must already be stripped of
 * callbacks. Returns 0, or -1 when the change could not be published. */
int bus_publish(bus_t *b, const char *channel, const char *method, const json_t *doc,
                const json_t *opt);

/* Sessions subscribed to channel (this bus' view of the deployment). */
size_t bus_online(bus_t *b, const char *channel);

#endif
