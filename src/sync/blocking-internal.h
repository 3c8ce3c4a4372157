/* Internal header: the blocking pool's call for layers that say what it is
 * for (src/sync/blocking.c). */
#ifndef KEEL_BLOCKING_INTERNAL_H
#define KEEL_BLOCKING_INTERNAL_H

#include "keel/blocking.h"
#include "wait.h"

/* keel_blocking_run, with the task dump showing the wait as kind (e.g.
 * KEEL__WAIT_RESOLVE) rather than as a blocking-pool call. */
int keel__blocking_run_as(keel__wait_kind_t kind, keel_blocking_fn fn, void *data, size_t size,
                          keel_blocking_dispose_fn dispose);

#endif
