/* dnode: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#ifndef DNODED_DNODE_H
#define DNODED_DNODE_H
#endif
