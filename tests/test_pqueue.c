/* Priority channels (KEEL_CHAN_PRIORITY): smallest key first, FIFO among
 * equal keys, blocking senders and receivers, close, cancellation, GROW,
 * two-phase sends with a key, odd item sizes, and a random stress against
 * a sorted reference. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

static int settle(void) { return keel_sleep_ms(5); }

static keel_chan_t *open_pq(size_t cap, keel_chan_policy_t policy) {
  keel_chan_opts_t o = {
      .elem_size = sizeof(int), .capacity = cap, .policy = policy, .order = KEEL_CHAN_PRIORITY};
  keel_chan_t *c = NULL;
  return keel_chan_open(&o, &c) == 0 ? c : NULL;
}

static int send_key(keel_chan_t *c, int64_t key, int v) { return keel_chan_send_key(c, key, &v); }

#define CHECK_RECV(c, want)                  \
  do {                                       \
    int got_ = -1;                           \
    CHECK_EQ(keel_chan_recv((c), &got_), 0); \
    CHECK_EQ(got_, (want));                  \
  } while (0)

struct op {
  keel_chan_t *c;
  int64_t key;
  int value;
  int rc;
  bool done;
};

static int sender_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_chan_send_key(op->c, op->key, &op->value);
  op->done = true;
  return 0;
}

static int receiver_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_chan_recv(op->c, &op->value);
  op->done = true;
  return 0;
}

/* ---- Order ---------------------------------------------------------------------- */

static int order_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_pq(8, KEEL_CHAN_BLOCK);
  CHECK(c);
  static const int64_t keys[] = {40, -7, 12, INT64_MAX, 0, INT64_MIN, 12, 3};
  for (int i = 0; i < 8; i++)
    CHECK_EQ(send_key(c, keys[i], (int)i), 0);
  CHECK(keel_chan_is_full(c));
  static const int want[] = {5, 1, 4, 7, 2, 6, 0, 3}; /* indices by key, ties by order */
  for (int i = 0; i < 8; i++)
    CHECK_RECV(c, want[i]);
  /* interleaved: a smaller key sent later still goes first */
  CHECK_EQ(send_key(c, 10, 100), 0);
  CHECK_EQ(send_key(c, 20, 200), 0);
  CHECK_RECV(c, 100);
  CHECK_EQ(send_key(c, 5, 50), 0);
  CHECK_EQ(keel_chan_send(c, &(int){0}), 0); /* plain send: key 0 */
  CHECK_RECV(c, 0);
  CHECK_RECV(c, 50);
  CHECK_RECV(c, 200);
  CHECK(keel_chan_is_empty(c));
  keel_chan_close(c);
  return 0;
}
static void test_smallest_key_first(void **state) {
  (void)state;
  kt_run_body(order_body, NULL, 1);
}

static int ties_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_pq(300, KEEL_CHAN_BLOCK);
  CHECK(c);
  /* three keys interleaved: each key's items must leave in sending order */
  for (int i = 0; i < 300; i++)
    CHECK_EQ(send_key(c, (i * 7) % 3, i), 0);
  for (int key = 0; key < 3; key++)
    for (int i = 0; i < 300; i++)
      if ((i * 7) % 3 == key)
        CHECK_RECV(c, i);
  keel_chan_close(c);
  return 0;
}
static void test_equal_keys_fifo(void **state) {
  (void)state;
  kt_run_body(ties_body, NULL, 1);
}

/* ---- Blocking, close, cancellation -------------------------------------------------- */

/* A sender blocked on a full channel is admitted by a receive and its item
 * takes its place by key; a receiver blocked on an empty one gets the
 * first item sent. */
static int blocking_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_pq(2, KEEL_CHAN_BLOCK);
  CHECK(c);
  CHECK_EQ(send_key(c, 5, 5), 0);
  CHECK_EQ(send_key(c, 9, 9), 0);
  CHECK_EQ(keel_chan_try_send_key(c, 1, &(int){1}), -EAGAIN);
  struct op snd = {.c = c, .key = 1, .value = 1};
  keel_scope_t *s = kt_spawn_in_scope(sender_task, &snd, KEEL_WORKER_CURRENT);
  CHECK(s);
  CHECK_RC(settle());
  CHECK(!snd.done);
  CHECK_RECV(c, 5);
  CHECK_RC(settle());
  CHECK(snd.done);
  CHECK_EQ(snd.rc, 0);
  keel_scope_close(s);
  CHECK_RECV(c, 1);
  CHECK_RECV(c, 9);
  struct op rcv = {.c = c, .value = -1};
  s = kt_spawn_in_scope(receiver_task, &rcv, KEEL_WORKER_CURRENT);
  CHECK(s);
  CHECK_RC(settle());
  CHECK(!rcv.done);
  CHECK_EQ(send_key(c, 3, 3), 0);
  CHECK_RC(settle());
  CHECK(rcv.done);
  CHECK_EQ(rcv.rc, 0);
  CHECK_EQ(rcv.value, 3);
  keel_scope_close(s);
  keel_chan_close(c);
  return 0;
}
static void test_blocking_send_recv(void **state) {
  (void)state;
  kt_run_body(blocking_body, NULL, 1);
}

/* Close: a blocked sender gets -EPIPE; what is queued drains in key order,
 * then -EPIPE; a blocked receiver on an empty channel gets -EPIPE. */
static int close_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_pq(2, KEEL_CHAN_BLOCK);
  keel_chan_t *empty = open_pq(2, KEEL_CHAN_BLOCK);
  CHECK(c && empty);
  CHECK_EQ(send_key(c, 2, 2), 0);
  CHECK_EQ(send_key(c, 1, 1), 0);
  struct op snd = {.c = c, .key = 0, .value = 0}, rcv = {.c = empty};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  CHECK_RC(keel_spawn(s, sender_task, &snd, NULL));
  CHECK_RC(keel_spawn(s, receiver_task, &rcv, NULL));
  CHECK_RC(settle());
  CHECK_EQ(keel_chan_shutdown(c), 0);
  CHECK_EQ(keel_chan_shutdown(empty), 0);
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  CHECK_EQ(snd.rc, -EPIPE);
  CHECK_EQ(rcv.rc, -EPIPE);
  CHECK_EQ(send_key(c, 0, 0), -EPIPE);
  CHECK_RECV(c, 1);
  CHECK_RECV(c, 2);
  int v;
  CHECK_EQ(keel_chan_recv(c, &v), -EPIPE);
  keel_chan_close(c);
  keel_chan_close(empty);
  return 0;
}
static void test_close_drains_in_key_order(void **state) {
  (void)state;
  kt_run_body(close_body, NULL, 1);
}

/* A cancelled receiver leaves the list (the next one gets the item); a
 * cancelled sender sent nothing. */
static int cancel_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_pq(1, KEEL_CHAN_BLOCK);
  CHECK(c);
  struct op r1 = {.c = c, .value = -1}, r2 = {.c = c, .value = -1};
  keel_scope_t *s1 = kt_spawn_in_scope(receiver_task, &r1, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *s2 = kt_spawn_in_scope(receiver_task, &r2, KEEL_WORKER_CURRENT);
  CHECK(s1 && s2);
  CHECK_RC(settle());
  keel_scope_cancel(s1, KEEL_CANCEL_USER);
  keel_scope_close(s1);
  CHECK_EQ(r1.rc, -ECANCELED);
  CHECK_EQ(send_key(c, 4, 4), 0);
  CHECK_RC(settle());
  CHECK(r2.done);
  CHECK_EQ(r2.value, 4);
  keel_scope_close(s2);

  CHECK_EQ(send_key(c, 8, 8), 0);
  struct op snd = {.c = c, .key = 1, .value = 1};
  keel_scope_t *s = kt_spawn_in_scope(sender_task, &snd, KEEL_WORKER_CURRENT);
  CHECK(s);
  CHECK_RC(settle());
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_close(s);
  CHECK_EQ(snd.rc, -ECANCELED);
  CHECK_RECV(c, 8);
  CHECK(keel_chan_is_empty(c));
  keel_chan_close(c);
  return 0;
}
static void test_cancel_blocked(void **state) {
  (void)state;
  kt_run_body(cancel_body, NULL, 1);
}

/* ---- GROW, two-phase sends, options -------------------------------------------------- */

static int grow_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_pq(1, KEEL_CHAN_GROW);
  CHECK(c);
  for (int i = 0; i < 1000; i++)
    CHECK_EQ(send_key(c, 999 - i, i), 0); /* descending keys: every push sifts to the top */
  CHECK(keel_chan_capacity(c) >= 1000);
  CHECK_EQ(keel_chan_len(c), 1000);
  for (int i = 999; i >= 0; i--)
    CHECK_RECV(c, i);
  keel_chan_close(c);
  return 0;
}
static void test_grow(void **state) {
  (void)state;
  kt_run_body(grow_body, NULL, 1);
}

static int reserve_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_pq(3, KEEL_CHAN_BLOCK);
  CHECK(c);
  keel_chan_slot_t a, b;
  CHECK_EQ(keel_chan_reserve(c, &a), 0);
  CHECK_EQ(keel_chan_reserve(c, &b), 0);
  CHECK_EQ(send_key(c, 5, 5), 0);
  CHECK(keel_chan_is_full(c));
  CHECK_EQ(keel_chan_commit_key(c, &b, 1, &(int){1}), 0);
  CHECK_EQ(keel_chan_abort(c, &a), 0);
  CHECK_EQ(keel_chan_len(c), 2);
  CHECK_RECV(c, 1);
  CHECK_RECV(c, 5);
  CHECK_EQ(keel_chan_reserve(c, &a), 0);
  CHECK_EQ(keel_chan_commit(c, &a, &(int){0}), 0); /* key 0 */
  CHECK_EQ(send_key(c, -1, -1), 0);
  CHECK_RECV(c, -1);
  CHECK_RECV(c, 0);
  keel_chan_close(c);
  return 0;
}
static void test_reserve_commit_key(void **state) {
  (void)state;
  kt_run_body(reserve_body, NULL, 1);
}

/* Items of a size that is not a multiple of 8 stay intact through the
 * heap's moves (entries are padded). */
typedef struct odd_item {
  char text[13];
} odd_item_t;

static int odd_size_body(void *arg) {
  (void)arg;
  keel_chan_opts_t o = {.elem_size = sizeof(odd_item_t),
                        .capacity = 4,
                        .policy = KEEL_CHAN_GROW,
                        .order = KEEL_CHAN_PRIORITY};
  keel_chan_t *c = NULL;
  CHECK_EQ(keel_chan_open(&o, &c), 0);
  for (int i = 0; i < 64; i++) {
    odd_item_t it;
    snprintf(it.text, sizeof it.text, "item-%07d", (i * 37) % 64);
    CHECK_EQ(keel_chan_send_key(c, (i * 37) % 64, &it), 0);
  }
  for (int i = 0; i < 64; i++) {
    odd_item_t it, want;
    snprintf(want.text, sizeof want.text, "item-%07d", i);
    CHECK_EQ(keel_chan_recv(c, &it), 0);
    CHECK(memcmp(it.text, want.text, sizeof it.text) == 0);
  }
  keel_chan_close(c);
  return 0;
}
static void test_odd_item_size(void **state) {
  (void)state;
  kt_run_body(odd_size_body, NULL, 1);
}

static void test_open_rejects_drop_policies(void **state) {
  (void)state;
  keel_chan_t *c = (keel_chan_t *)&c;
  keel_chan_opts_t o = {
      .elem_size = 4, .capacity = 4, .policy = KEEL_CHAN_DROP_NEWEST, .order = KEEL_CHAN_PRIORITY};
  assert_int_equal(keel_chan_open(&o, &c), -EINVAL);
  assert_null(c);
  o.policy = KEEL_CHAN_DROP_OLDEST;
  assert_int_equal(keel_chan_open(&o, &c), -EINVAL);
  o.order = (keel_chan_order_t)(KEEL_CHAN_PRIORITY + 1);
  o.policy = KEEL_CHAN_BLOCK;
  assert_int_equal(keel_chan_open(&o, &c), -EINVAL);
  o.order = KEEL_CHAN_PRIORITY;
  o.elem_size = SIZE_MAX - 4;
  assert_int_equal(keel_chan_open(&o, &c), -EINVAL);
  o.elem_size = 4;
  assert_int_equal(keel_chan_open(&o, &c), 0);
  keel_chan_close(c);
}

/* ---- Random stress against a reference ---------------------------------------------- */

#define STRESS_OPS (200000 / KT_SCALE)
#define STRESS_MAX 512

/* The reference: an unsorted array searched for the smallest (key, seq). */
struct ref {
  int64_t key[STRESS_MAX];
  int seq[STRESS_MAX];
  int len;
};

static int ref_pop(struct ref *r) {
  int best = 0;
  for (int i = 1; i < r->len; i++)
    if (r->key[i] < r->key[best] || (r->key[i] == r->key[best] && r->seq[i] < r->seq[best]))
      best = i;
  int seq = r->seq[best];
  r->len--;
  r->key[best] = r->key[r->len];
  r->seq[best] = r->seq[r->len];
  return seq;
}

/* Random sends (few distinct keys, so ties are common) and receives; the
 * channel grows past its start capacity and drains to empty now and then. */
static int stress_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_pq(4, KEEL_CHAN_GROW);
  struct ref *r = calloc(1, sizeof *r);
  CHECK(c && r);
  int seq = 0;
  for (int op = 0; op < STRESS_OPS; op++) {
    bool drain_phase = (op / 4096) & 1;
    bool do_send =
        r->len == 0 || (r->len < STRESS_MAX && keel_random_below(100) < (drain_phase ? 35u : 65u));
    if (do_send) {
      int64_t key = (int64_t)keel_random_below(64) - 32;
      r->key[r->len] = key;
      r->seq[r->len] = seq;
      r->len++;
      CHECK_EQ(keel_chan_send_key(c, key, &seq), 0);
      seq++;
    } else {
      int want = ref_pop(r);
      int got = -1;
      CHECK_EQ(keel_chan_try_recv(c, &got), 0);
      if (got != want)
        KT_FAIL("op %d: received item %d, the reference says %d", op, got, want);
    }
    CHECK_EQ(keel_chan_len(c), (size_t)r->len);
  }
  while (r->len > 0) {
    int want = ref_pop(r);
    CHECK_RECV(c, want);
  }
  CHECK(keel_chan_is_empty(c));
  free(r);
  keel_chan_close(c);
  return 0;
}
static void test_random_stress_vs_reference(void **state) {
  (void)state;
  kt_run_body(stress_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_smallest_key_first),
      cmocka_unit_test(test_equal_keys_fifo),
      cmocka_unit_test(test_blocking_send_recv),
      cmocka_unit_test(test_close_drains_in_key_order),
      cmocka_unit_test(test_cancel_blocked),
      cmocka_unit_test(test_grow),
      cmocka_unit_test(test_reserve_commit_key),
      cmocka_unit_test(test_odd_item_size),
      cmocka_unit_test(test_open_rejects_drop_policies),
      cmocka_unit_test(test_random_stress_vs_reference),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
