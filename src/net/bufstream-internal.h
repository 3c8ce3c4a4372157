/* Internal header: what tests may see of buffered streams (bufstream.c). */
#ifndef KEEL_BUFSTREAM_INTERNAL_H
#define KEEL_BUFSTREAM_INTERNAL_H

#include <stddef.h>

#include "worker.h"

/* Buffers in w's cache of free read buffers. */
size_t keel__bufstream_cached(keel__worker_t *w);

#endif
