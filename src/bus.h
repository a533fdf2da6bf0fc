/* bus: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#ifndef DNODED_BUS_H
#define DNODED_BUS_H
#endif
