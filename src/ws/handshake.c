/* WebSocket: handshake (being written). */
#include "ws-internal.h"
