/* master: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#ifndef DNODED_MASTER_H
#define DNODED_MASTER_H
#endif
