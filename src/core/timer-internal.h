/* Internal header: the per-worker hierarchical timer wheel. */
#ifndef KEEL_TIMER_INTERNAL_H
#define KEEL_TIMER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Resolution is 1 ms. Times are absolute monotonic milliseconds (ticks).
 * KEEL__WHEEL_LEVELS levels of 64 slots each: level L slot spans 64^L ms,
 * so 6 levels cover 64^6 ms (~2.2 years); a timer further away than that
 * waits in the top level and is re-filed when it comes into range. */
#define KEEL__WHEEL_BITS 6
#define KEEL__WHEEL_SLOTS (1u << KEEL__WHEEL_BITS)
#define KEEL__WHEEL_LEVELS 6

typedef struct keel__timer keel__timer_t;
typedef void (*keel__timer_cb)(keel__timer_t *t);

/* Intrusive: embed in the owner and use container_of in the callback.
 * Starting a timer allocates nothing. The slot lists are singly headed and
 * doubly linked as the Linux hlist: pprev points at whatever points at this
 * timer (the list head's first or the previous timer's next), so stop unlinks
 * in O(1) without knowing the slot, and a head costs one pointer. */
struct keel__timer {
  keel__timer_t *next;
  keel__timer_t **pprev; /* NULL when not armed */
  int64_t expire_ms;
  keel__timer_cb cb;
};

typedef struct keel__timer_list {
  keel__timer_t *first;
} keel__timer_list_t;

typedef struct keel__wheel {
  int64_t now_ms;                        /* last tick processed */
  uint64_t occupied[KEEL__WHEEL_LEVELS]; /* bit per non-empty slot */
  keel__timer_list_t slots[KEEL__WHEEL_LEVELS][KEEL__WHEEL_SLOTS];
  keel__timer_list_t due; /* started at or before now_ms: fire next advance */
  int64_t due_min;        /* <= every expiry in due; INT64_MAX when empty */
  size_t count;           /* armed timers */
} keel__wheel_t;

void keel__wheel_init(keel__wheel_t *w, int64_t now_ms);
void keel__timer_init(keel__timer_t *t, keel__timer_cb cb);

/* Arms t to fire at expire_ms (absolute). A time at or before now fires at
 * the next advance. Re-arming an armed timer moves it. O(1). */
void keel__timer_start(keel__wheel_t *w, keel__timer_t *t, int64_t expire_ms);
/* Disarms t; no-op if not armed. O(1). */
void keel__timer_stop(keel__wheel_t *w, keel__timer_t *t);
static inline bool keel__timer_armed(const keel__timer_t *t) { return t->pprev != NULL; }

/* Earliest tick at which some timer may fire: a lower bound, never later
 * than the earliest armed timer (INT64_MAX when none is armed). */
int64_t keel__wheel_next_expiry(const keel__wheel_t *w);

/* Moves the wheel to now_ms, firing (calling cb of) every timer whose
 * expiry is <= now_ms, in expiry order (order within a tick not guaranteed).
 * A callback may start or stop any timer, including itself; during it
 * w->now_ms is the tick being fired, so a timer it starts for a tick up to
 * now_ms fires in this same call, and one at or before w->now_ms in the next.
 * A now_ms before w->now_ms only fires the due timers. Returns the number of
 * timers fired. */
size_t keel__wheel_advance(keel__wheel_t *w, int64_t now_ms);

#endif
