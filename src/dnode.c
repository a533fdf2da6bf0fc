/* dnode: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#include "dnode.h"
