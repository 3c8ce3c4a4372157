/* Internal header: lab mode: virtual clock, seeded scheduler, trace (src/core/lab.c). */
#ifndef KEEL_LAB_INTERNAL_H
#define KEEL_LAB_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "keel/core.h"
#include "worker.h"

/* ---- Lab mode (src/core/lab.c) ------------------------------------------------ */

/* One worker; time is virtual and stands still while tasks run. */
typedef struct keel__lab {
  int64_t now_ns;
  uint64_t seed;
  uint64_t trace_hash; /* FNV-1a over the scheduling events */
  uint64_t trace_events;
  uint64_t next_task_id;
  keel_task_t *yielder; /* just yielded: not drawn next while another is ready */
  bool deadlock_reported;
} keel__lab_t;

/* w's lab state (its backend's), or NULL on a real backend. */
keel__lab_t *keel__lab_of(const keel__worker_t *w);

/* Lab events folded into the trace. */
enum {
  KEEL__LAB_EV_RUN = 1,
  KEEL__LAB_EV_SPAWN,
  KEEL__LAB_EV_CLOCK,
  KEEL__LAB_EV_USER,
  KEEL__LAB_EV_NET /* the lab network: a listen, connect or accept and its outcome */
};
void keel__lab_trace(keel__lab_t *lab, unsigned kind, uint64_t a, uint64_t b);
uint64_t keel__lab_seed_from(const keel_config_t *cfg);

#endif
