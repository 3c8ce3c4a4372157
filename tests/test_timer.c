/* Timer wheel: every timer fires exactly at its tick, once, never early, at
 * every level and beyond the wheel's range, whether time advances by single
 * ticks or by jumps of hours; next_expiry stays a lower bound throughout. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>

#include "timer-internal.h"

#define TT_START_MS INT64_C(123456789) /* not aligned to any level's slots */
#define TT_HOUR_MS INT64_C(3600000)
#define TT_DAY_MS (24 * TT_HOUR_MS)
#define TT_YEAR_MS (365 * TT_DAY_MS)
#define TT_SPAN(level) (INT64_C(1) << ((level)*KEEL__WHEEL_BITS)) /* ms a slot spans */

/* One wheel and what the test expects of it. */
typedef struct tt_ctx {
  keel__wheel_t wheel;
  int64_t target;      /* now_ms of the advance in progress */
  int64_t prev_target; /* now_ms of the advance before it */
  size_t fired;        /* callbacks so far */
} tt_ctx_t;

typedef struct tt_timer tt_timer_t;
typedef void (*tt_then_fn)(tt_timer_t *tt);

struct tt_timer {
  keel__timer_t timer;
  tt_ctx_t *ctx;
  bool expected_armed;  /* the test's model of keel__timer_armed */
  int64_t expire_ms;    /* expiry the test asked for */
  int64_t fired_tick;   /* wheel.now_ms inside the last callback, -1 if none */
  int64_t fired_target; /* the advance target during the last callback */
  int fires;
  tt_then_fn then; /* optional extra action in the callback */
  int64_t period;  /* for re-arming callbacks */
  int rearms_left;
  tt_timer_t **peers; /* for a callback that stops others (NULL-terminated) */
};

#define TT_OWNER(t) ((tt_timer_t *)((char *)(t)-offsetof(tt_timer_t, timer)))

/* Records the fire and checks it against the model: armed, due, and in the
 * advance whose target first reached the expiry, at the expiry's own tick. */
static void tt_cb(keel__timer_t *t) {
  tt_timer_t *tt = TT_OWNER(t);
  tt_ctx_t *ctx = tt->ctx;
  assert_false(keel__timer_armed(t));
  assert_true(tt->expected_armed);
  assert_int_equal(t->expire_ms, tt->expire_ms);
  assert_true(tt->expire_ms <= ctx->target);
  if (tt->expire_ms > ctx->prev_target) { /* else it was started already due */
    assert_int_equal(ctx->wheel.now_ms, tt->expire_ms);
  } else {
    assert_int_equal(ctx->wheel.now_ms, ctx->prev_target);
  }
  tt->expected_armed = false;
  tt->fired_tick = ctx->wheel.now_ms;
  tt->fired_target = ctx->target;
  tt->fires++;
  ctx->fired++;
  if (tt->then != NULL)
    tt->then(tt);
}

static void tt_ctx_init(tt_ctx_t *ctx, int64_t now_ms) {
  keel__wheel_init(&ctx->wheel, now_ms);
  ctx->target = ctx->prev_target = now_ms;
  ctx->fired = 0;
}

static void tt_timer_init(tt_timer_t *tt, tt_ctx_t *ctx) {
  *tt = (tt_timer_t){.ctx = ctx, .fired_tick = -1, .fired_target = -1};
  keel__timer_init(&tt->timer, tt_cb);
}

static void tt_start(tt_timer_t *tt, int64_t expire_ms) {
  tt->expire_ms = expire_ms;
  tt->expected_armed = true;
  keel__timer_start(&tt->ctx->wheel, &tt->timer, expire_ms);
  assert_true(keel__timer_armed(&tt->timer));
}

static void tt_stop(tt_timer_t *tt) {
  tt->expected_armed = false;
  keel__timer_stop(&tt->ctx->wheel, &tt->timer);
  assert_false(keel__timer_armed(&tt->timer));
}

/* Advances to now_ms and returns how many timers fired, checking the count
 * the wheel reports against the callbacks seen. */
static size_t tt_advance(tt_ctx_t *ctx, int64_t now_ms) {
  size_t before = ctx->fired;
  ctx->prev_target = ctx->wheel.now_ms;
  ctx->target = now_ms;
  size_t fired = keel__wheel_advance(&ctx->wheel, now_ms);
  assert_int_equal(fired, ctx->fired - before);
  assert_int_equal(ctx->wheel.now_ms, now_ms);
  return fired;
}

/* xorshift64*: reproducible pseudo-random numbers without global state. */
static uint64_t tt_rand(uint64_t *state) {
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * UINT64_C(2685821657736338717);
}

static int64_t tt_rand_below(uint64_t *state, int64_t bound) {
  return (int64_t)(tt_rand(state) % (uint64_t)bound);
}

/* Checks the wheel against the model after an advance: nothing due is left
 * armed, armed flags and count agree, and next_expiry is a lower bound that
 * lies after now (so a caller driving the wheel by it makes progress). */
static void tt_check_model(tt_ctx_t *ctx, tt_timer_t *timers, size_t n) {
  int64_t earliest = INT64_MAX;
  size_t armed = 0;
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(keel__timer_armed(&timers[i].timer), timers[i].expected_armed);
    if (!timers[i].expected_armed)
      continue;
    armed++;
    assert_true(timers[i].expire_ms > ctx->wheel.now_ms);
    if (timers[i].expire_ms < earliest)
      earliest = timers[i].expire_ms;
  }
  assert_int_equal(ctx->wheel.count, armed);
  int64_t next = keel__wheel_next_expiry(&ctx->wheel);
  assert_true(next <= earliest);
  assert_true(next > ctx->wheel.now_ms);
  if (armed == 0)
    assert_int_equal(next, INT64_MAX);
}

static void test_single_timer_fires_at_its_tick(void **state) {
  (void)state;
  tt_ctx_t ctx;
  tt_timer_t tt;
  tt_ctx_init(&ctx, TT_START_MS);
  tt_timer_init(&tt, &ctx);
  assert_int_equal(keel__wheel_next_expiry(&ctx.wheel), INT64_MAX);
  tt_start(&tt, TT_START_MS + 100);
  assert_int_equal(ctx.wheel.count, 1);
  assert_true(keel__wheel_next_expiry(&ctx.wheel) <= TT_START_MS + 100);
  for (int64_t now = TT_START_MS + 1; now < TT_START_MS + 100; now++) {
    assert_int_equal(tt_advance(&ctx, now), 0);
    assert_int_equal(tt.fires, 0);
    tt_check_model(&ctx, &tt, 1);
  }
  assert_int_equal(tt_advance(&ctx, TT_START_MS + 100), 1);
  assert_int_equal(tt.fires, 1);
  assert_int_equal(tt.fired_tick, TT_START_MS + 100);
  assert_int_equal(tt.fired_target, TT_START_MS + 100);
  assert_int_equal(ctx.wheel.count, 0);
  assert_int_equal(tt_advance(&ctx, TT_START_MS + 10 * TT_DAY_MS), 0);
  assert_int_equal(tt.fires, 1);
  assert_int_equal(keel__wheel_next_expiry(&ctx.wheel), INT64_MAX);
}

/* A timer at or before now fires at the next advance, even one to the same
 * now, and not before; next_expiry reports it as due. */
static void test_due_timers_fire_on_next_advance(void **state) {
  (void)state;
  tt_ctx_t ctx;
  tt_timer_t at_now, in_past, negative;
  tt_ctx_init(&ctx, TT_START_MS);
  tt_timer_init(&at_now, &ctx);
  tt_timer_init(&in_past, &ctx);
  tt_timer_init(&negative, &ctx);
  tt_start(&at_now, TT_START_MS);
  tt_start(&in_past, TT_START_MS - 1000);
  tt_start(&negative, -5);
  assert_int_equal(ctx.wheel.count, 3);
  assert_true(keel__wheel_next_expiry(&ctx.wheel) <= -5);
  assert_int_equal(at_now.fires + in_past.fires + negative.fires, 0);
  tt_stop(&negative);
  assert_true(keel__wheel_next_expiry(&ctx.wheel) <= TT_START_MS - 1000);
  assert_int_equal(tt_advance(&ctx, TT_START_MS), 2);
  assert_int_equal(at_now.fires, 1);
  assert_int_equal(in_past.fires, 1);
  assert_int_equal(negative.fires, 0);
  assert_int_equal(ctx.wheel.count, 0);
  assert_int_equal(keel__wheel_next_expiry(&ctx.wheel), INT64_MAX);
}

static int tt_cmp_int64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

#define TT_LEVEL_CASES 40

/* Expiries at every level's edges, both a span after the unaligned start
 * (1, 63, 64, 65, 4095, 4096, ... 64^6 + 1 ms) and around each level's next
 * slot start, plus beyond the wheel's range. */
static size_t tt_level_expiries(int64_t *out) {
  size_t n = 0;
  for (unsigned level = 1; level <= KEEL__WHEEL_LEVELS; level++) {
    int64_t span = TT_SPAN(level);
    int64_t aligned = (TT_START_MS / span + 1) * span;
    for (int64_t delta = -1; delta <= 1; delta++) {
      out[n++] = TT_START_MS + span + delta;
      out[n++] = aligned + delta;
    }
  }
  out[n++] = TT_START_MS + 1;
  out[n++] = TT_START_MS + TT_SPAN(6) + 12345;
  out[n++] = TT_START_MS + 3 * TT_YEAR_MS;
  out[n++] = TT_START_MS + 3 * TT_YEAR_MS + 1;
  qsort(out, n, sizeof out[0], tt_cmp_int64);
  return n;
}

/* All level cases armed at once; time jumps to just before each expiry, then
 * steps one tick at a time: not at expiry - 1, exactly at expiry. */
static void test_timers_at_every_level(void **state) {
  (void)state;
  static tt_ctx_t ctx;
  static tt_timer_t timers[TT_LEVEL_CASES];
  int64_t expiries[TT_LEVEL_CASES];
  size_t n = tt_level_expiries(expiries);
  assert_true(n <= TT_LEVEL_CASES);
  tt_ctx_init(&ctx, TT_START_MS);
  for (size_t i = 0; i < n; i++) {
    tt_timer_init(&timers[i], &ctx);
    tt_start(&timers[i], expiries[i]);
  }
  for (size_t i = 0; i < n; i++) {
    int64_t expire = expiries[i];
    for (int64_t now = expire - 3; now < expire; now++) {
      if (now > ctx.wheel.now_ms)
        tt_advance(&ctx, now);
      assert_int_equal(timers[i].fires, 0);
    }
    tt_check_model(&ctx, timers, n);
    if (expire > ctx.wheel.now_ms)
      assert_true(tt_advance(&ctx, expire) >= 1);
    assert_int_equal(timers[i].fires, 1);
    assert_int_equal(timers[i].fired_tick, expire);
    assert_int_equal(timers[i].fired_target, expire);
  }
  tt_advance(&ctx, expiries[n - 1] + 10 * TT_YEAR_MS);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(timers[i].fires, 1);
  assert_int_equal(ctx.wheel.count, 0);
}

/* Far timers (days, years, beyond the wheel's ~2.2 years) with time moving in
 * jumps of hours to days: each fires in the first advance reaching it. */
static void test_far_timers_with_large_jumps(void **state) {
  (void)state;
  static const int64_t offsets[] = {TT_DAY_MS,           2 * TT_DAY_MS + 17, 40 * TT_DAY_MS,
                                    400 * TT_DAY_MS,     3 * TT_YEAR_MS,     3 * TT_YEAR_MS + 1,
                                    10 * TT_YEAR_MS + 99};
  enum { N = sizeof offsets / sizeof offsets[0] };
  tt_ctx_t ctx;
  tt_timer_t timers[N];
  uint64_t rng = 0x9e3779b97f4a7c15u;
  tt_ctx_init(&ctx, TT_START_MS);
  for (size_t i = 0; i < N; i++) {
    tt_timer_init(&timers[i], &ctx);
    tt_start(&timers[i], TT_START_MS + offsets[i]);
  }
  while (ctx.wheel.count > 0) {
    int64_t step = TT_HOUR_MS + tt_rand_below(&rng, 3 * TT_DAY_MS);
    tt_advance(&ctx, ctx.wheel.now_ms + step);
    for (size_t i = 0; i < N; i++) {
      assert_true(timers[i].fires <= 1);
      if (timers[i].fired_target != ctx.wheel.now_ms)
        continue; /* not fired in this advance */
      assert_int_equal(timers[i].fired_tick, timers[i].expire_ms);
      assert_true(ctx.wheel.now_ms - step < timers[i].expire_ms);
    }
    tt_check_model(&ctx, timers, N);
  }
  for (size_t i = 0; i < N; i++)
    assert_int_equal(timers[i].fires, 1);
}

#define TT_MANY 10000

/* Picks an expiry: mostly spread over days, some within a second, some within
 * minutes, a few at or before now. */
static int64_t tt_random_expiry(uint64_t *rng, int64_t now) {
  switch (tt_rand_below(rng, 8)) {
  case 0:
    return now - tt_rand_below(rng, 3);
  case 1:
  case 2:
    return now + 1 + tt_rand_below(rng, 1000);
  case 3:
    return now + 1 + tt_rand_below(rng, 10 * 60 * 1000);
  default:
    return now + tt_rand_below(rng, 5 * TT_DAY_MS);
  }
}

/* Steps from a tick to hours, so both dense firing and long skips happen. */
static int64_t tt_random_step(uint64_t *rng) {
  switch (tt_rand_below(rng, 4)) {
  case 0:
    return 1 + tt_rand_below(rng, 64);
  case 1:
    return 1 + tt_rand_below(rng, 100000);
  case 2:
    return 1 + tt_rand_below(rng, 5000000);
  default:
    return 1 + tt_rand_below(rng, 4 * TT_HOUR_MS);
  }
}

/* Between advances, stops or moves some random timers. */
static void tt_random_churn(uint64_t *rng, tt_timer_t *timers, int64_t now) {
  for (int k = 0; k < 20; k++) {
    tt_timer_t *tt = &timers[tt_rand_below(rng, TT_MANY)];
    if (tt_rand_below(rng, 2) == 0)
      tt_stop(tt);
    else
      tt_start(tt, tt_random_expiry(rng, now));
  }
}

/* 10,000 timers with random expiries up to days, half stopped at once, others
 * stopped or moved as time advances by random steps: each armed timer fires
 * once, at its tick, in the first advance reaching it; stopped ones never. */
static void test_many_random_timers(void **state) {
  (void)state;
  static tt_ctx_t ctx;
  static tt_timer_t timers[TT_MANY];
  uint64_t rng = 0x2545f4914f6cdd1du;
  size_t expected_fires = 0;
  tt_ctx_init(&ctx, TT_START_MS);
  for (size_t i = 0; i < TT_MANY; i++) {
    tt_timer_init(&timers[i], &ctx);
    tt_start(&timers[i], tt_random_expiry(&rng, TT_START_MS));
  }
  for (size_t i = 0; i < TT_MANY; i += 2)
    tt_stop(&timers[i]);
  while (ctx.wheel.count > 0) {
    size_t armed_before = ctx.wheel.count;
    tt_advance(&ctx, ctx.wheel.now_ms + tt_random_step(&rng));
    expected_fires += armed_before - ctx.wheel.count;
    tt_check_model(&ctx, timers, TT_MANY);
    if (ctx.wheel.now_ms < TT_START_MS + 4 * TT_DAY_MS)
      tt_random_churn(&rng, timers, ctx.wheel.now_ms);
  }
  assert_int_equal(ctx.fired, expected_fires);
  assert_true(ctx.fired > TT_MANY / 2); /* the initial half and churn restarts */
}

/* Stopping: the half stopped before their expiry never fire, the rest fire
 * once; stopping an unarmed timer is a no-op; a stopped then restarted timer
 * fires at its new expiry. */
static void test_stopped_timers_never_fire(void **state) {
  (void)state;
  enum { N = 1000 };
  static tt_ctx_t ctx;
  static tt_timer_t timers[N];
  uint64_t rng = 42;
  tt_ctx_init(&ctx, TT_START_MS);
  for (size_t i = 0; i < N; i++) {
    tt_timer_init(&timers[i], &ctx);
    int64_t after = i % 2 == 0 ? TT_HOUR_MS : 0; /* evens outlive the first hour */
    tt_start(&timers[i], TT_START_MS + after + 1 + tt_rand_below(&rng, TT_DAY_MS));
  }
  tt_advance(&ctx, TT_START_MS + TT_HOUR_MS);
  for (size_t i = 0; i < N; i += 2) {
    assert_int_equal(timers[i].fires, 0);
    tt_stop(&timers[i]);
  }
  size_t count = ctx.wheel.count;
  tt_stop(&timers[0]);
  assert_int_equal(ctx.wheel.count, count);
  tt_start(&timers[0], TT_START_MS + 2 * TT_DAY_MS);
  tt_start(&timers[2], ctx.wheel.now_ms); /* due: fires at the next advance */
  while (ctx.wheel.count > 0) {
    tt_advance(&ctx, ctx.wheel.now_ms + 1 + tt_rand_below(&rng, 3 * TT_HOUR_MS));
    tt_check_model(&ctx, timers, N);
  }
  for (size_t i = 1; i < N; i += 2)
    assert_int_equal(timers[i].fires, 1);
  for (size_t i = 4; i < N; i += 2)
    assert_int_equal(timers[i].fires, 0);
  assert_int_equal(timers[0].fires, 1);
  assert_int_equal(timers[0].fired_tick, TT_START_MS + 2 * TT_DAY_MS);
  assert_int_equal(timers[2].fires, 1);
  assert_int_equal(timers[2].fired_tick, TT_START_MS + TT_HOUR_MS);
}

static void tt_stop_peers(tt_timer_t *tt) {
  for (tt_timer_t **peer = tt->peers; *peer != NULL; peer++)
    if (*peer != tt)
      tt_stop(*peer);
}

/* Timers due in the same tick, some cascaded down from high levels and some
 * filed straight into level 0: whichever fires first stops the others, which
 * then must not fire although their slot is being drained. */
static void test_callback_stops_timers_of_same_tick(void **state) {
  (void)state;
  enum { N = 6 };
  tt_ctx_t ctx;
  tt_timer_t timers[N];
  tt_timer_t *group[N + 1];
  int64_t tick = TT_START_MS + 5 * TT_DAY_MS + 7;
  tt_ctx_init(&ctx, TT_START_MS);
  for (size_t i = 0; i < N; i++) {
    tt_timer_init(&timers[i], &ctx);
    timers[i].then = tt_stop_peers;
    timers[i].peers = group;
    group[i] = &timers[i];
  }
  group[N] = NULL;
  tt_start(&timers[0], tick);
  tt_start(&timers[1], tick);
  tt_advance(&ctx, tick - 100000);
  tt_start(&timers[2], tick);
  tt_advance(&ctx, tick - 1000);
  tt_start(&timers[3], tick);
  tt_advance(&ctx, tick - 10);
  tt_start(&timers[4], tick);
  tt_start(&timers[5], tick);
  assert_int_equal(tt_advance(&ctx, tick - 1), 0);
  assert_int_equal(tt_advance(&ctx, tick), 1);
  int fires = 0;
  for (size_t i = 0; i < N; i++) {
    fires += timers[i].fires;
    if (timers[i].fires == 1)
      assert_int_equal(timers[i].fired_tick, tick);
  }
  assert_int_equal(fires, 1);
  assert_int_equal(ctx.wheel.count, 0);
  assert_int_equal(tt_advance(&ctx, tick + TT_YEAR_MS), 0);
}

static void tt_rearm_by_period(tt_timer_t *tt) {
  if (tt->rearms_left-- > 0)
    tt_start(tt, tt->expire_ms + tt->period);
}

static void tt_rearm_now(tt_timer_t *tt) {
  if (tt->rearms_left-- > 0)
    tt_start(tt, tt->ctx->wheel.now_ms);
}

/* A callback starting a timer for a later tick within the advance running. */
static void tt_start_peer_soon(tt_timer_t *tt) {
  tt_start(tt->peers[0], tt->ctx->wheel.now_ms + 1);
}

/* A callback re-arming itself a period after its expiry fires at each period
 * when time steps one tick at a time, and catches up within one jump. */
static void test_callback_rearms_periodically(void **state) {
  (void)state;
  tt_ctx_t ctx;
  tt_timer_t periodic;
  tt_ctx_init(&ctx, TT_START_MS);
  tt_timer_init(&periodic, &ctx);
  periodic.then = tt_rearm_by_period;
  periodic.period = 7;
  periodic.rearms_left = 100000;
  tt_start(&periodic, TT_START_MS + 3);
  for (int64_t now = TT_START_MS + 1; now <= TT_START_MS + 300; now++) {
    tt_advance(&ctx, now);
    int64_t elapsed = now - (TT_START_MS + 3);
    assert_int_equal(periodic.fires, elapsed < 0 ? 0 : elapsed / 7 + 1);
    if (elapsed >= 0)
      assert_int_equal(periodic.fired_tick, TT_START_MS + 3 + elapsed / 7 * 7);
  }
  int fires = periodic.fires;
  assert_int_equal(tt_advance(&ctx, TT_START_MS + 300 + 7000), 1000);
  assert_int_equal(periodic.fires, fires + 1000);
  assert_int_equal(periodic.fired_tick, TT_START_MS + 3 + (fires + 999) * 7);
  tt_stop(&periodic);
  assert_int_equal(ctx.wheel.count, 0);
}

/* A callback re-arming itself for now: fires at the next advance, not again
 * within the running one (which would loop forever). */
static void test_callback_rearms_for_now(void **state) {
  (void)state;
  tt_ctx_t ctx;
  tt_timer_t again;
  tt_ctx_init(&ctx, TT_START_MS);
  tt_timer_init(&again, &ctx);
  again.then = tt_rearm_now;
  again.rearms_left = 1;
  int64_t tick = TT_START_MS + 5000;
  tt_start(&again, tick);
  assert_int_equal(tt_advance(&ctx, tick + 100), 1);
  assert_true(keel__timer_armed(&again.timer));
  assert_int_equal(again.expire_ms, tick);
  assert_true(keel__wheel_next_expiry(&ctx.wheel) <= tick);
  assert_int_equal(tt_advance(&ctx, tick + 100), 1);
  assert_int_equal(again.fires, 2);
  assert_int_equal(again.fired_tick, tick + 100);
  assert_int_equal(ctx.wheel.count, 0);
}

/* A callback starting another timer for a later tick inside the advance that
 * is running: it fires within that advance, at its own tick. */
static void test_callback_starts_timer_within_jump(void **state) {
  (void)state;
  tt_ctx_t ctx;
  tt_timer_t starter, started;
  tt_timer_t *starter_peers[] = {&started, NULL};
  tt_ctx_init(&ctx, TT_START_MS);
  tt_timer_init(&starter, &ctx);
  tt_timer_init(&started, &ctx);
  starter.then = tt_start_peer_soon;
  starter.peers = starter_peers;
  int64_t tick = TT_START_MS + 3 * TT_DAY_MS;
  tt_start(&starter, tick);
  assert_int_equal(tt_advance(&ctx, tick + TT_HOUR_MS), 2);
  assert_int_equal(starter.fired_tick, tick);
  assert_int_equal(started.fired_tick, tick + 1);
  assert_int_equal(started.fired_target, tick + TT_HOUR_MS);
  assert_int_equal(ctx.wheel.count, 0);
}

/* Driving the wheel as an event loop does, sleeping until next_expiry: every
 * timer fires in the advance whose target is exactly its expiry, and the
 * number of wake-ups stays within a few per timer (cascades, not ticks). */
static void test_drive_by_next_expiry(void **state) {
  (void)state;
  enum { N = 2000 };
  static tt_ctx_t ctx;
  static tt_timer_t timers[N];
  uint64_t rng = 7;
  tt_ctx_init(&ctx, TT_START_MS);
  for (size_t i = 0; i < N; i++) {
    tt_timer_init(&timers[i], &ctx);
    int64_t range = i % 100 == 0 ? 4 * TT_YEAR_MS : 5 * TT_DAY_MS;
    tt_start(&timers[i], TT_START_MS + 1 + tt_rand_below(&rng, range));
  }
  size_t wakeups = 0;
  for (int64_t next; (next = keel__wheel_next_expiry(&ctx.wheel)) != INT64_MAX; wakeups++) {
    assert_true(next > ctx.wheel.now_ms);
    tt_advance(&ctx, next);
    tt_check_model(&ctx, timers, N);
  }
  for (size_t i = 0; i < N; i++) {
    assert_int_equal(timers[i].fires, 1);
    assert_int_equal(timers[i].fired_target, timers[i].expire_ms);
  }
  assert_true(wakeups <= N * (KEEL__WHEEL_LEVELS + 1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_timer_fires_at_its_tick),
      cmocka_unit_test(test_due_timers_fire_on_next_advance),
      cmocka_unit_test(test_timers_at_every_level),
      cmocka_unit_test(test_far_timers_with_large_jumps),
      cmocka_unit_test(test_many_random_timers),
      cmocka_unit_test(test_stopped_timers_never_fire),
      cmocka_unit_test(test_callback_stops_timers_of_same_tick),
      cmocka_unit_test(test_callback_rearms_periodically),
      cmocka_unit_test(test_callback_rearms_for_now),
      cmocka_unit_test(test_callback_starts_timer_within_jump),
      cmocka_unit_test(test_drive_by_next_expiry),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
