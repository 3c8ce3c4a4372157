/* WebSocket: frame (being written). */
#include "ws-internal.h"
