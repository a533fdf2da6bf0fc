/* api: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#ifndef DNODED_API_H
#define DNODED_API_H
#endif
