/* WebSocket: utf8 (being written). */
#include "ws-internal.h"
