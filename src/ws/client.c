/* WebSocket: client (being written). */
#include "ws-internal.h"
