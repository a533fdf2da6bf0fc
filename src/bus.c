/* bus: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#include "bus.h"
