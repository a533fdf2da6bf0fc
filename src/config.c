/* config: placeholder until the module lands (see ARCHITECTURE.md's module table). */
#include "config.h"
