/* transport: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#ifndef DNODED_TRANSPORT_H
#define DNODED_TRANSPORT_H
#endif
