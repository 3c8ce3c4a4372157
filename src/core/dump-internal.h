/* Internal header: the task dump's snapshot and its renderings (src/core/dump.c,
 * src/core/dump-render.c). */
#ifndef KEEL_DUMP_INTERNAL_H
#define KEEL_DUMP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/core.h"
#include "task.h"

/* ---- The snapshot: copies, taken under the scope locks ------------------------ */

typedef struct keel__snap_scope {
  const keel_scope_t *addr; /* identity only: names the scope a join waits for */
  int parent;               /* index in the snapshot, or -1 for the root */
  int depth;
  size_t live;
  int cancel_reason; /* keel_cancel_reason_t: the scope's own mark */
  int64_t deadline_ns;
  unsigned flags;
  char name[KEEL__NAME_MAX];
} keel__snap_scope_t;

typedef struct keel__snap_task {
  int scope; /* index in the snapshot */
  int worker;
  int state; /* enum keel__task_state */
  bool stackless;
  bool until_set;
  unsigned char kind; /* keel__wait_kind_t */
  int fd;
  const void *object; /* unless until_set */
  int64_t until_ns;   /* if until_set */
  int64_t since_ns;
  int64_t deadline_ns;
  const char *activity;
  char name[KEEL__NAME_MAX];
} keel__snap_task_t;

/* Scopes in depth-first order, each before its tasks' entries and its
 * nested scopes; tasks grouped by scope, in the same order. */
typedef struct keel__snap {
  keel__snap_scope_t *scopes;
  size_t nscopes, scopes_cap;
  keel__snap_task_t *tasks;
  size_t ntasks, tasks_cap;
  int workers;
  int64_t now_ns; /* the runtime's clock (virtual in lab mode) after the walk */
  bool oom;
} keel__snap_t;

/* ---- Rendering ----------------------------------------------------------------- */

/* A growable buffer; oom once an allocation failed (what follows is dropped). */
typedef struct keel__dumpbuf {
  char *data;
  size_t len, cap;
  bool oom;
} keel__dumpbuf_t;

void keel__dumpbuf_put(keel__dumpbuf_t *b, const char *s, size_t n);
void keel__dumpbuf_printf(keel__dumpbuf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The snapshot as text (an indented tree, one line per scope and task) or
 * as one JSON document. Reads the peers' addresses of the descriptors
 * waited on (getpeername): no lock may be held. */
void keel__dump_text(const keel__snap_t *sn, keel__dumpbuf_t *out);
void keel__dump_json(const keel__snap_t *sn, keel__dumpbuf_t *out);

#endif
