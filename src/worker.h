/* worker: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#ifndef DNODED_WORKER_H
#define DNODED_WORKER_H
#endif
