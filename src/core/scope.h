/* Internal header: scopes (src/core/scope.c). */
#ifndef KEEL_SCOPE_H
#define KEEL_SCOPE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "msg.h"
#include "queue.h"
#include "spin.h"
#include "task.h"
#include "wait.h"

/* ---- Scopes ---------------------------------------------------------------- */

struct keel_scope {
  keel_scope_t *parent;
  keel__queue_t child_node; /* parent->children, under the parent's lock */
  keel__queue_t children;
  keel__queue_t tasks;       /* live tasks */
  keel__queue_t finished;    /* finished tasks that have handles */
  keel__queue_t opener_node; /* opener task's open_scopes */
  keel_task_t *opener;
  keel__spinlock_t lock;
  size_t live; /* live tasks + nested scopes, under lock */
  /* The reason the scope was cancelled (KEEL_CANCEL_PARENT: an enclosing
   * scope was); a scope whose ancestor is cancelled counts as cancelled
   * even before the mark reaches it (keel__scope_cancelled). */
  _Atomic int cancel_reason;
  _Atomic int64_t deadline_ns;
  unsigned flags;
  bool is_root;
  /* Under lock. Set in the same critical section that sees the last unit
   * finish with the opener joining (or finds none left), so no task can
   * slip in between; cleared when the opener spawns into it again. */
  bool joined;
  int first_error;         /* of the first child that failed, under lock */
  int first_cancel;        /* -ECANCELED/-ETIMEDOUT of the first child cut short */
  keel__wait_t *join_wait; /* the opener parked in join, under lock */
  keel__wait_t *join_wake; /* the joiner join_msg wakes */
  keel__msg_t join_msg;    /* wakes a joiner on another worker */
  keel_runtime_t *rt;
  char name[KEEL__NAME_MAX];
};

/* Puts t in s for a spawn by the current task: -ECANCELED if s (or a scope
 * it is nested in) is cancelled, -EPIPE if s was joined and the caller is
 * not its opener. */
int keel__scope_add_task(keel_scope_t *s, keel_task_t *t);
/* The reason s counts as cancelled: its own mark, KEEL_CANCEL_PARENT when
 * only an enclosing scope (up to a shield) is cancelled, or NONE. */
keel_cancel_reason_t keel__scope_cancelled(const keel_scope_t *s);
/* Where the cancellation s is under began: the first reason up the chain
 * that is not KEEL_CANCEL_PARENT (PARENT if there is none), or NONE. */
keel_cancel_reason_t keel__scope_cancel_origin(const keel_scope_t *s);
void keel__scope_task_done(keel_scope_t *s, keel_task_t *t);
keel_scope_t *keel__scope_new_root(keel_runtime_t *rt);
void keel__scope_free(keel_scope_t *s);
/* The task dump of rt (src/core/dump.c), from any thread of rt's or one
 * that outlives its workers (the signal thread): keel_tasks_write's
 * contract; and its text form logged at level, one line per entry. */
int keel__tasks_write(keel_runtime_t *rt, unsigned flags, keel_sink_fn sink, void *arg);
void keel__tasks_log(keel_runtime_t *rt, keel_log_level_t level);

#endif
