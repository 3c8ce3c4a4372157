/* keel_race: the first success wins (failures only when all fail), or the
 * first to finish with KEEL_RACE_FIRST_DONE; losers blocked in sleeps and
 * channel reads are cancelled and have finished - their cleanup included,
 * even cleanup that blocks under a shield - when keel_race returns; many
 * branches; the caller's cancellation from another worker; misuse. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

#define MS KEEL_NS_PER_MS

/* What every branch of one race shares. */
struct arena {
  int cleaned;        /* losers whose blocking call returned -ECANCELED and who cleaned up */
  int finished;       /* branches that returned */
  keel_chan_t *chan;  /* never written: readers block until cancelled */
  atomic_int started; /* branches that began (read from another worker) */
};

/* A branch: waits ms (or reads the channel when ms < 0), then returns
 * result. Cancelled, it counts itself cleaned, after cleanup_ms of
 * shielded cleanup. */
struct branch {
  struct arena *arena;
  int64_t ms;
  int result;
  int64_t cleanup_ms;
  int cancel_result; /* returned when cancelled, if not 0 (a failed cleanup) */
  int got;           /* what its blocking call returned */
  int finish_order;  /* how many branches of the race had returned before it */
};

static int branch_fn(void *arg) {
  struct branch *b = arg;
  int item;
  atomic_fetch_add(&b->arena->started, 1);
  b->got = b->ms < 0 ? keel_chan_recv(b->arena->chan, &item) : keel_sleep_ms(b->ms);
  if (b->got == -ECANCELED) {
    if (b->cleanup_ms > 0) {
      keel_shield_begin(keel_now_ns() + 1000 * MS);
      keel_sleep_ms(b->cleanup_ms);
      keel_shield_end();
    }
    b->arena->cleaned++;
    b->finish_order = b->arena->finished++;
    return b->cancel_result ? b->cancel_result : -ECANCELED;
  }
  b->finish_order = b->arena->finished++;
  return b->got < 0 ? b->got : b->result;
}

static keel_chan_t *open_chan(void) {
  keel_chan_opts_t o = {.elem_size = sizeof(int), .capacity = 1};
  keel_chan_t *c = NULL;
  return keel_chan_open(&o, &c) == 0 ? c : NULL;
}

static void make_branches(struct arena *a, struct branch *b, keel_branch_t *kb, size_t n) {
  for (size_t i = 0; i < n; i++) {
    b[i].arena = a;
    kb[i] = (keel_branch_t){branch_fn, &b[i]};
  }
}

/* Losers blocked in sleeps and in a channel read; one branch fails first
 * but does not win by default. */
static int first_success_body(void *arg) {
  (void)arg;
  struct arena a = {.chan = open_chan()};
  CHECK(a.chan);
  struct branch b[5] = {
      {.ms = 10000, .result = 1},  /* loser: sleeping */
      {.ms = 0, .result = -EIO},   /* fails at once: not a winner */
      {.ms = 5, .result = 42},     /* the winner */
      {.ms = -1, .result = 9},     /* loser: reading */
      {.ms = 100000, .result = 2}, /* loser: sleeping */
  };
  keel_branch_t kb[5];
  make_branches(&a, b, kb, 5);
  int winner = -7;
  int64_t t0 = kt_clock_ns();
  CHECK_EQ(keel_race(kb, 5, 0, &winner), 42);
  CHECK_BETWEEN(kt_clock_ns() - t0, 5 * MS, 5 * MS + kt_late_ns()); /* not the losers' sleeps */
  CHECK_EQ(winner, 2);
  CHECK_EQ(a.cleaned, 3); /* every loser cancelled and cleaned up before return */
  CHECK_EQ(a.finished, 5);
  CHECK_EQ(b[0].got, -ECANCELED);
  CHECK_EQ(b[3].got, -ECANCELED);
  CHECK_EQ(b[4].got, -ECANCELED);
  keel_chan_close(a.chan);
  return 0;
}
static void test_first_success_wins_losers_drained(void **state) {
  (void)state;
  kt_run_body(first_success_body, NULL, 1);
}

/* Losers whose cleanup blocks (shielded): keel_race waits for it. */
static int slow_cleanup_body(void *arg) {
  (void)arg;
  struct arena a = {.chan = open_chan()};
  CHECK(a.chan);
  struct branch b[3] = {
      {.ms = 1, .result = 5},
      {.ms = 10000, .cleanup_ms = 20},
      {.ms = -1, .cleanup_ms = 30},
  };
  keel_branch_t kb[3];
  make_branches(&a, b, kb, 3);
  int winner = -1;
  int64_t t0 = kt_clock_ns();
  CHECK_EQ(keel_race(kb, 3, 0, &winner), 5);
  CHECK_BETWEEN(kt_clock_ns() - t0, 31 * MS, 31 * MS + kt_late_ns()); /* the win, then 30 ms */
  CHECK_EQ(winner, 0);
  CHECK_EQ(a.cleaned, 2);
  keel_chan_close(a.chan);
  return 0;
}
static void test_losers_cleanup_awaited(void **state) {
  (void)state;
  kt_run_body(slow_cleanup_body, NULL, 1);
}

static int first_done_body(void *arg) {
  (void)arg;
  struct arena a = {.chan = open_chan()};
  CHECK(a.chan);
  struct branch b[3] = {
      {.ms = 10000, .result = 1},
      {.ms = 2, .result = -EIO},
      {.ms = -1},
  };
  keel_branch_t kb[3];
  make_branches(&a, b, kb, 3);
  int winner = -1;
  CHECK_EQ(keel_race(kb, 3, KEEL_RACE_FIRST_DONE, &winner), -EIO);
  CHECK_EQ(winner, 1);
  CHECK_EQ(a.cleaned, 2);
  keel_chan_close(a.chan);
  return 0;
}
static void test_first_done_error_wins(void **state) {
  (void)state;
  kt_run_body(first_done_body, NULL, 1);
}

/* Every branch fails: the first failure (in time) is the result. The
 * shortest sleep ends first in lab mode; a loaded machine may start the
 * branches far enough apart to change that, so the order they finished in
 * decides. */
static int all_fail_body(void *arg) {
  (void)arg;
  struct arena a = {.chan = NULL};
  struct branch b[3] = {
      {.ms = 20, .result = -EPIPE},
      {.ms = 10, .result = -ECONNRESET},
      {.ms = 1, .result = -EIO},
  };
  keel_branch_t kb[3];
  make_branches(&a, b, kb, 3);
  int winner = 0;
  int rc = keel_race(kb, 3, 0, &winner);
  for (int i = 0; i < 3; i++)
    if (b[i].finish_order == 0)
      CHECK_EQ(rc, b[i].result);
  if (keel_lab_active())
    CHECK_EQ(rc, -EIO);
  CHECK_EQ(winner, -1);
  CHECK_EQ(a.finished, 3);
  CHECK_EQ(a.cleaned, 0); /* nobody was cancelled: each failed on its own */
  return 0;
}
static void test_all_fail_first_error(void **state) {
  (void)state;
  kt_run_body(all_fail_body, NULL, 1);
}

/* More branches than live on the caller's stack. */
#define MANY 40
static int many_body(void *arg) {
  (void)arg;
  struct arena a = {.chan = NULL};
  struct branch b[MANY];
  keel_branch_t kb[MANY];
  memset(b, 0, sizeof b);
  for (int i = 0; i < MANY; i++) {
    b[i].ms = i == 27 ? 3 : 10000;
    b[i].result = 100 + i;
  }
  make_branches(&a, b, kb, MANY);
  int winner = -1;
  CHECK_EQ(keel_race(kb, MANY, 0, &winner), 127);
  CHECK_EQ(winner, 27);
  CHECK_EQ(a.cleaned, MANY - 1);
  return 0;
}
static void test_many_branches(void **state) {
  (void)state;
  kt_run_body(many_body, NULL, 1);
}

/* A branch's own children (spawned into keel_scope_current()) are losers
 * too. */
static int grandchild(void *arg) {
  struct arena *a = arg;
  if (keel_sleep_ms(100000) == -ECANCELED)
    a->cleaned++;
  return 0;
}
static int spawns_then_wins(void *arg) {
  struct arena *a = arg;
  CHECK_RC(keel_spawn(keel_scope_current(), grandchild, a, NULL));
  CHECK_RC(keel_sleep_ms(2));
  return 11;
}
static int grandchild_body(void *arg) {
  (void)arg;
  struct arena a = {.chan = NULL};
  struct branch slow = {.arena = &a, .ms = 10000};
  keel_branch_t kb[2] = {{spawns_then_wins, &a}, {branch_fn, &slow}};
  int winner = -1;
  CHECK_EQ(keel_race(kb, 2, 0, &winner), 11);
  CHECK_EQ(winner, 0);
  CHECK_EQ(a.cleaned, 2); /* the slow branch and the winner's child */
  return 0;
}
static void test_branch_children_drained(void **state) {
  (void)state;
  kt_run_body(grandchild_body, NULL, 1);
}

/* The racing task is cancelled from another worker: -ECANCELED, and every
 * branch has finished when keel_race returns. */
struct racer {
  int rc;
  int winner;
  int cleaned_at_return;
  struct arena arena;
};
static int racer_task(void *arg) {
  struct racer *r = arg;
  struct branch b[3] = {
      {.ms = 100000, .cancel_result = -EPIPE}, {.ms = 100000, .cleanup_ms = 5}, {.ms = -1}};
  keel_branch_t kb[3];
  r->arena.chan = open_chan();
  if (!r->arena.chan)
    return -ENOMEM;
  make_branches(&r->arena, b, kb, 3);
  r->rc = keel_race(kb, 3, 0, &r->winner);
  r->cleaned_at_return = r->arena.cleaned;
  keel_chan_close(r->arena.chan);
  return 0;
}
static int caller_cancelled_body(void *arg) {
  (void)arg;
  struct racer r = {.rc = 1, .winner = 5};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  keel_spawn_opts_t o = {.name = "racer", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(s, racer_task, &r, &o));
  while (atomic_load(&r.arena.started) < 3) /* every branch is blocked, or about to */
    CHECK_RC(keel_sleep_ms(1));
  CHECK_RC(keel_sleep_ms(2));
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_close(s);
  CHECK_EQ(r.rc, -ECANCELED);
  CHECK_EQ(r.winner, -1);
  CHECK_EQ(r.cleaned_at_return, 3);
  return 0;
}
static void test_caller_cancelled_drains(void **state) {
  (void)state;
  kt_run_body(caller_cancelled_body, NULL, 2);
}

static int misuse_body(void *arg) {
  (void)arg;
  int winner = 3;
  CHECK_EQ(keel_race(NULL, 0, 0, &winner), -EINVAL);
  CHECK_EQ(winner, -1);
  keel_branch_t bad = {NULL, NULL};
  CHECK_EQ(keel_race(&bad, 1, 0, NULL), -EINVAL);
  return 0;
}
static void test_misuse(void **state) {
  (void)state;
  kt_run_body(misuse_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_first_success_wins_losers_drained),
      cmocka_unit_test(test_losers_cleanup_awaited),
      cmocka_unit_test(test_first_done_error_wins),
      cmocka_unit_test(test_all_fail_first_error),
      cmocka_unit_test(test_many_branches),
      cmocka_unit_test(test_branch_children_drained),
      cmocka_unit_test(test_caller_cancelled_drains),
      cmocka_unit_test(test_misuse),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
