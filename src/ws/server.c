/* WebSocket: server (being written). */
#include "ws-internal.h"
