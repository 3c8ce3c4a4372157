/* WebSocket: ws (being written). */
#include "ws-internal.h"
