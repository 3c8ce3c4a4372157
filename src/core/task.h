/* Internal header: tasks (src/core/task.c). */
#ifndef KEEL_TASK_H
#define KEEL_TASK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "fiber.h"
#include "msg.h"
#include "queue.h"
#include "wait.h"

typedef struct keel__worker keel__worker_t;

/* ---- Tasks --------------------------------------------------------------- */

enum keel__task_state {
  KEEL__TASK_NEW,
  KEEL__TASK_READY,
  KEEL__TASK_RUNNING,
  KEEL__TASK_BLOCKED,
  KEEL__TASK_DONE,
};

#define KEEL__NAME_MAX 32

struct keel_task {
  keel__ctx_t ctx;
  keel__worker_t *worker;
  keel_scope_t *scope;
  keel__queue_t scope_node; /* scope->tasks, under the scope lock */
  keel__queue_t ready_node; /* worker ready queues */
  keel__stack_t *stack;
  keel_task_fn fn;
  void *arg;
  atomic_int refs;     /* running + handle + pending interrupt message */
  uint32_t stack_size; /* at most KEEL__STACK_MAX */
  unsigned char state; /* enum keel__task_state */
  bool shedding;       /* giving its stack back: parked until restart_wait ends */
  /* What the task waits on while BLOCKED, copied from its wait by
   * keel__wait_arm (the rest is below, with the cold fields): the task
   * dump reads the task, never the wait on its stack. */
  unsigned char wait_kind; /* keel__wait_kind_t */
  bool wait_until_set;     /* wait_until_ns, not wait_object */
  int wait_fd;
  int shield_depth;
  atomic_bool interrupt_pending;
  bool has_handle;
  keel__wait_t *wait;  /* when BLOCKED */
  keel_alert_t *alert; /* enabled alert (keel_alert_enable), or NULL */
  int64_t deadline_ns; /* per task; inside a shield, set within the shield */
  /* The shields' deadlines and the scopes the task opened are kept in
   * t->stack (keel__stack_t): a task inside a shield or a scope of its own
   * always holds its stack, and an idle task without one then costs that
   * much less. */
  keel_outcome_t outcome;
  uint32_t lab_id;           /* lab mode: spawn order, for the trace */
  keel__msg_t start_msg;     /* spawn onto another worker */
  keel__msg_t interrupt_msg; /* cross-worker cancellation */
#if KEEL_ASAN
  void *asan_fake_stack;
#endif
#if KEEL_TSAN
  void *tsan_fiber;
#endif
  struct keel__restart *restart; /* keel__task_restart_after's, while it waits */
  union {
    const void *wait_object; /* identity only: never read through */
    int64_t wait_until_ns;   /* the wait's own end (a sleep) */
  };
  int64_t wait_since_tick;  /* the worker's timer tick when the wait was armed */
  int64_t wait_deadline_ns; /* the wait's effective deadline */
  /* What a layer above the kernel says the task is doing (a string
   * literal: the dump may read it at any time), or NULL. */
  const char *activity;
  char name[KEEL__NAME_MAX];
};

/* A wait that outlives the stack of the task waiting: it lives in the
 * object waited on (a connection), with the hook that finishes the
 * operation once the task has a stack again. */
typedef struct keel__restart {
  keel__wait_t wait;
  void (*hook)(struct keel__restart *r);
  void *owner; /* for the hook */
} keel__restart_t;

/* The current task gives its stack back to the worker's pool and stays
 * parked, stackless, until r->wait (armed by the caller with
 * keel__wait_arm) ends; then, on a fresh stack, r->hook(r) finishes the
 * operation and the task goes on in fn(arg) as if newly spawned (same
 * scope, name, handle, per-task deadline). Never returns. */
_Noreturn void keel__task_restart_after(keel__restart_t *r, keel_task_fn fn, void *arg);

/* Makes t runnable on its worker (owning worker only). */
void keel__task_ready(keel_task_t *t);
/* Cancellation reached t's scope: wake it if blocked (any thread). */
void keel__task_interrupt(keel_task_t *t);
void keel__task_unref(keel_task_t *t);
/* The error a blocking point in t returns now (0, -ECANCELED, -ETIMEDOUT)
 * and the reason behind it. */
int keel__task_cancel_err(keel_task_t *t, keel_cancel_reason_t *reason);
int64_t keel__task_deadline(keel_task_t *t);

#endif
