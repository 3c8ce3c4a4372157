/* Internal header: intrusive lists, container_of and branch hints. */
#ifndef KEEL_QUEUE_H
#define KEEL_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

#define keel__container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define KEEL__LIKELY(x) __builtin_expect(!!(x), 1)
#define KEEL__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- Intrusive circular queue (libuv style) ---------------------------- */

typedef struct keel__queue {
  struct keel__queue *next, *prev;
} keel__queue_t;

static inline void keel__queue_init(keel__queue_t *q) { q->next = q->prev = q; }
static inline bool keel__queue_empty(const keel__queue_t *q) { return q->next == q; }
static inline void keel__queue_insert_tail(keel__queue_t *h, keel__queue_t *q) {
  q->next = h;
  q->prev = h->prev;
  q->prev->next = q;
  h->prev = q;
}
static inline void keel__queue_remove(keel__queue_t *q) {
  q->prev->next = q->next;
  q->next->prev = q->prev;
  q->next = q->prev = q;
}

#endif
