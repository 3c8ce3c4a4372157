/* WebSocket: deflate (being written). */
#include "ws-internal.h"
