/* Per-worker hierarchical timer wheel: 6 levels of 64 slots, 1 ms ticks.
 *
 * A timer due at tick E, seen from the current tick N < E, is filed on level L,
 * the highest 6-bit digit in which E and N differ, in slot (E >> 6L) & 63. So
 * (E >> 6L) - (N >> 6L) is in [1, 63]: the slot's start ((E >> 6L) << 6L) lies
 * ahead of N, within one turn of its level, and no later than E. When N reaches
 * that start the slot is re-filed relative to the new N, so its timers move to
 * lower levels (cascade) until they reach level 0, whose slots are single ticks.
 * A timer more than a turn of the top level away waits in the top level's last
 * slot of the turn and is re-filed when N reaches it (~2.1 years on).
 *
 * Between advances the slot holding N is empty on every level, so each level's
 * next slot start is one ctz of its bitmap rotated to N's position: advancing
 * visits only starts of occupied slots, however far it jumps.
 *
 * Ticks are handled as uint64_t inside, as shifts of negative values are not
 * portable: keel__wheel_init keeps now_ms >= 0, and expiries not after now_ms
 * go to the due list without being shifted. */

#include "timer-internal.h"

#include <assert.h>

#define KEEL__SLOT_MASK (KEEL__WHEEL_SLOTS - 1)
#define KEEL__WHEEL_TOP (KEEL__WHEEL_LEVELS - 1)

/* Which span of 64^level ticks the tick falls in; its low 6 bits are the slot. */
static uint64_t keel__wheel_pos(uint64_t tick, unsigned level) {
  return tick >> (level * KEEL__WHEEL_BITS);
}

static void keel__list_push(keel__timer_list_t *list, keel__timer_t *t) {
  t->next = list->first;
  if (t->next != NULL)
    t->next->pprev = &t->next;
  list->first = t;
  t->pprev = &list->first;
}

/* *link has just become NULL: if link is a list head, that list is now empty.
 * A wheel slot then loses its bit and the due list its bound. link may also be
 * a timer's next or the head of a batch being fired on the stack, hence the
 * range check on integer addresses (relational operators on pointers into
 * different objects are undefined). */
static void keel__wheel_note_tail(keel__wheel_t *w, keel__timer_t **link) {
  uintptr_t addr = (uintptr_t)link;
  uintptr_t base = (uintptr_t)&w->slots[0][0];
  if (link == &w->due.first) {
    w->due_min = INT64_MAX;
    return;
  }
  if (addr < base || addr - base >= sizeof w->slots)
    return;
  size_t index = (addr - base) / sizeof(keel__timer_list_t);
  w->occupied[index / KEEL__WHEEL_SLOTS] &= ~(UINT64_C(1) << (index % KEEL__WHEEL_SLOTS));
}

/* Unlinks an armed t. Leaves count alone: the caller knows whether t is being
 * moved (still armed) or disarmed. */
static void keel__wheel_unlink(keel__wheel_t *w, keel__timer_t *t) {
  keel__timer_t **pprev = t->pprev;
  *pprev = t->next;
  if (t->next != NULL)
    t->next->pprev = pprev;
  else
    keel__wheel_note_tail(w, pprev);
  t->next = NULL;
  t->pprev = NULL;
}

static void keel__wheel_push_slot(keel__wheel_t *w, unsigned level, uint64_t pos,
                                  keel__timer_t *t) {
  unsigned slot = (unsigned)(pos & KEEL__SLOT_MASK);
  keel__list_push(&w->slots[level][slot], t);
  w->occupied[level] |= UINT64_C(1) << slot;
}

/* Files t, due strictly after now, as the header comment of this file says. */
static void keel__wheel_file_ahead(keel__wheel_t *w, keel__timer_t *t) {
  uint64_t now = (uint64_t)w->now_ms;
  uint64_t expire = (uint64_t)t->expire_ms;
  unsigned level = (unsigned)(63 - __builtin_clzll(now ^ expire)) / KEEL__WHEEL_BITS;
  if (level > KEEL__WHEEL_TOP)
    level = KEEL__WHEEL_TOP;
  uint64_t pos = keel__wheel_pos(expire, level);
  uint64_t now_pos = keel__wheel_pos(now, level);
  assert(pos > now_pos);
  /* Only possible on the top level: park in the turn's last slot, the latest
   * start that is still no later than the expiry. */
  if (pos - now_pos > KEEL__SLOT_MASK)
    pos = now_pos + KEEL__SLOT_MASK;
  keel__wheel_push_slot(w, level, pos, t);
}

/* Files an armed, unlinked t relative to now_ms. */
static void keel__wheel_file(keel__wheel_t *w, keel__timer_t *t) {
  if (t->expire_ms > w->now_ms) {
    keel__wheel_file_ahead(w, t);
    return;
  }
  /* Not in a slot: firing it in the advance that is running (if any) could
   * loop forever on a callback that re-arms itself for now. */
  keel__list_push(&w->due, t);
  if (t->expire_ms < w->due_min)
    w->due_min = t->expire_ms;
}

void keel__wheel_init(keel__wheel_t *w, int64_t now_ms) {
  assert(now_ms >= 0);
  *w = (keel__wheel_t){.now_ms = now_ms, .due_min = INT64_MAX};
}

void keel__timer_init(keel__timer_t *t, keel__timer_cb cb) { *t = (keel__timer_t){.cb = cb}; }

void keel__timer_start(keel__wheel_t *w, keel__timer_t *t, int64_t expire_ms) {
  assert(t->cb != NULL);
  if (keel__timer_armed(t))
    keel__wheel_unlink(w, t);
  else
    w->count++;
  t->expire_ms = expire_ms;
  keel__wheel_file(w, t);
}

void keel__timer_stop(keel__wheel_t *w, keel__timer_t *t) {
  if (!keel__timer_armed(t))
    return;
  keel__wheel_unlink(w, t);
  w->count--;
}

/* The earliest start of an occupied slot, over all levels: a lower level's
 * slots can start after a higher level's next one (a level-0 timer 63 ms ahead
 * against a level-1 slot starting at the next multiple of 64), so every level
 * is looked at. While a tick is being fired this may be that tick itself. */
static uint64_t keel__wheel_next_start(const keel__wheel_t *w) {
  uint64_t now = (uint64_t)w->now_ms;
  uint64_t earliest = UINT64_MAX;
  for (unsigned level = 0; level < KEEL__WHEEL_LEVELS; level++) {
    uint64_t occupied = w->occupied[level];
    if (occupied == 0)
      continue;
    uint64_t now_pos = keel__wheel_pos(now, level);
    unsigned turn = (unsigned)(now_pos & KEEL__SLOT_MASK);
    /* Bit i of ahead stands for the slot i positions after now's. */
    uint64_t ahead = (occupied >> turn) | (occupied << (-turn & KEEL__SLOT_MASK));
    uint64_t start = (now_pos + (unsigned)__builtin_ctzll(ahead)) << (level * KEEL__WHEEL_BITS);
    if (start < earliest)
      earliest = start;
  }
  return earliest;
}

int64_t keel__wheel_next_expiry(const keel__wheel_t *w) {
  uint64_t start = keel__wheel_next_start(w);
  int64_t next = start > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)start;
  return w->due_min < next ? w->due_min : next;
}

static void keel__wheel_fire(keel__wheel_t *w, keel__timer_t *t) {
  keel__wheel_unlink(w, t);
  w->count--;
  t->cb(t);
}

/* Fires the timers that were due when this advance began. They are moved to a
 * batch first because a callback re-arming itself for now goes back to due. */
static size_t keel__wheel_fire_due(keel__wheel_t *w) {
  keel__timer_list_t batch = w->due;
  size_t fired = 0;
  if (batch.first == NULL)
    return 0;
  batch.first->pprev = &batch.first;
  w->due.first = NULL;
  w->due_min = INT64_MAX;
  /* Re-read the head each time: a callback may stop or move later timers. */
  for (keel__timer_t *t; (t = batch.first) != NULL; fired++)
    keel__wheel_fire(w, t);
  return fired;
}

/* Re-files every timer of a slot whose start is now. None comes back to this
 * slot (it lands lower, or on the top level a turn ahead); one due exactly now
 * goes to level 0's current slot, which the caller fires next. */
static void keel__wheel_cascade(keel__wheel_t *w, keel__timer_list_t *slot) {
  for (keel__timer_t *t; (t = slot->first) != NULL;) {
    keel__wheel_unlink(w, t);
    if (t->expire_ms > w->now_ms)
      keel__wheel_file_ahead(w, t);
    else
      keel__wheel_push_slot(w, 0, (uint64_t)w->now_ms, t);
  }
}

/* Processes tick now_ms: cascades each level whose current slot starts here
 * (the order does not matter, as a re-filed timer never lands in a current
 * slot except level 0's when due now), then fires level 0's slot. Draining
 * that slot by its head terminates and honours stops made by callbacks: a
 * timer started by a callback goes to due or to a slot ahead, never here. */
static size_t keel__wheel_run_tick(keel__wheel_t *w) {
  uint64_t now = (uint64_t)w->now_ms;
  size_t fired = 0;
  for (unsigned level = KEEL__WHEEL_TOP; level > 0; level--) {
    uint64_t pos = keel__wheel_pos(now, level);
    keel__timer_list_t *slot = &w->slots[level][pos & KEEL__SLOT_MASK];
    if (slot->first != NULL) {
      assert(pos << (level * KEEL__WHEEL_BITS) == now); /* only at a slot's start */
      keel__wheel_cascade(w, slot);
    }
  }
  keel__timer_list_t *slot = &w->slots[0][now & KEEL__SLOT_MASK];
  for (keel__timer_t *t; (t = slot->first) != NULL; fired++) {
    assert(t->expire_ms == w->now_ms);
    keel__wheel_fire(w, t);
  }
  return fired;
}

size_t keel__wheel_advance(keel__wheel_t *w, int64_t now_ms) {
  size_t fired = keel__wheel_fire_due(w);
  /* Jump from one occupied slot start to the next; empty spans cost nothing. */
  for (;;) {
    uint64_t start = keel__wheel_next_start(w);
    if (now_ms < 0 || start > (uint64_t)now_ms)
      break;
    assert(start > (uint64_t)w->now_ms);
    w->now_ms = (int64_t)start;
    fired += keel__wheel_run_tick(w);
  }
  if (now_ms > w->now_ms)
    w->now_ms = now_ms;
  return fired;
}
