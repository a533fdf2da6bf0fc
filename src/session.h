/* session: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#ifndef DNODED_SESSION_H
#define DNODED_SESSION_H
#endif
