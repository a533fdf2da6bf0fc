/* worker: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#include "worker.h"
