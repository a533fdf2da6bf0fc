/* metrics: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#ifndef DNODED_METRICS_H
#define DNODED_METRICS_H
#endif
