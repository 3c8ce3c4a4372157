/* Arena: alignment of many mixed allocations, contents kept until reset,
 * reset keeping exactly the first chunk (and a repeated pattern not
 * growing what the arena holds), large blocks, max_bytes, sizes that would
 * overflow, deferred callbacks (order, once each), copies, and the
 * options' defaults and limits. Under ASan every allocation is also
 * written in full, so a wrongly poisoned or undersized one is reported. */
#include "keel-test.h"

#define MAX_ALIGN _Alignof(max_align_t)

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

/* xorshift64: a fixed sequence, so a failure replays. */
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static keel_arena_t *open_arena(size_t chunk_size, size_t max_bytes) {
  keel_arena_opts_t opts = {.chunk_size = chunk_size, .max_bytes = max_bytes};
  keel_arena_t *a = NULL;
  assert_int_equal(keel_arena_open(&opts, &a), 0);
  assert_non_null(a);
  return a;
}

static bool aligned(const void *p, size_t align) { return (uintptr_t)p % align == 0; }

static uint8_t fill_byte(size_t i, size_t j) { return (uint8_t)(i * 31 + j * 7 + 1); }

static void test_defaults(void **state) {
  (void)state;
  keel_arena_t *a = NULL;
  assert_int_equal(keel_arena_open(NULL, &a), 0);
  assert_int_equal(keel_arena_held(a), 4096);
  assert_int_equal(keel_arena_used(a), 0);
  /* Well under a quarter of 4 KiB: carved from the first chunk. */
  assert_non_null(keel_arena_alloc(a, 512));
  assert_int_equal(keel_arena_held(a), 4096);
  assert_int_equal(keel_arena_close(a), 0);

  keel_arena_opts_t zeroed = {0};
  a = NULL;
  assert_int_equal(keel_arena_open(&zeroed, &a), 0);
  assert_int_equal(keel_arena_held(a), 4096);
  /* No limit: far more than one chunk's worth succeeds. */
  for (int i = 0; i < 1000; i++)
    assert_non_null(keel_arena_alloc(a, 100));
  assert_true(keel_arena_held(a) >= 100000);
  assert_int_equal(keel_arena_close(a), 0);
  assert_int_equal(keel_arena_close(NULL), 0);
}

static void expect_einval(size_t chunk_size, size_t max_bytes) {
  keel_arena_opts_t opts = {.chunk_size = chunk_size, .max_bytes = max_bytes};
  keel_arena_t *a = (keel_arena_t *)&opts; /* not NULL, to see it cleared */
  assert_int_equal(keel_arena_open(&opts, &a), -EINVAL);
  assert_null(a);
}

static void test_invalid_opts(void **state) {
  (void)state;
  expect_einval(1, 0);
  expect_einval(64, 0);
  expect_einval(KEEL_ARENA_MIN_CHUNK - 1, 0);
  expect_einval((size_t)PTRDIFF_MAX + 1, 0);
  expect_einval(SIZE_MAX, 0);
  expect_einval(8192, 8191); /* the first chunk alone is past max_bytes */
  expect_einval(0, 4095);    /* likewise with the default 4 KiB chunk */

  keel_arena_t *a = open_arena(KEEL_ARENA_MIN_CHUNK, KEEL_ARENA_MIN_CHUNK);
  assert_int_equal(keel_arena_held(a), KEEL_ARENA_MIN_CHUNK);
  for (int i = 0; i < 4; i++) /* the promised 64 free bytes */
    memset(keel_arena_alloc(a, 16), 0xa5, 16);
  assert_int_equal(keel_arena_held(a), KEEL_ARENA_MIN_CHUNK);
  assert_int_equal(keel_arena_close(a), 0);
}

/* A size mostly of header scale, sometimes 0, sometimes large. */
static size_t mixed_size(void) {
  uint64_t r = rng();
  switch (r % 16) {
  case 0:
    return 0;
  case 1:
    return (size_t)(r >> 8) % 6000;
  default:
    return (size_t)(r >> 8) % 80;
  }
}

static void test_alignment_mixed(void **state) {
  (void)state;
  keel_arena_t *a = open_arena(0, 0);
  for (size_t i = 0; i < 20000; i++) {
    size_t size = mixed_size();
    size_t align = MAX_ALIGN;
    void *p;
    if (rng() % 4 == 0) {
      align = (size_t)1 << (rng() % 13); /* 1 .. 4096 */
      p = keel_arena_alloc_aligned(a, size, align);
    } else {
      p = keel_arena_alloc(a, size);
    }
    assert_non_null(p);
    if (!aligned(p, align))
      fail_msg("allocation %zu (%zu bytes) at %p is not aligned to %zu", i, size, p, align);
    memset(p, (int)i, size);
  }
  assert_true(keel_arena_used(a) <= keel_arena_held(a));
  static const size_t bad_aligns[] = {0, 3, 24, 48, 8192, (size_t)1 << 20, SIZE_MAX};
  for (size_t i = 0; i < sizeof bad_aligns / sizeof bad_aligns[0]; i++)
    assert_null(keel_arena_alloc_aligned(a, 8, bad_aligns[i]));
  assert_int_equal(keel_arena_close(a), 0);
}

typedef struct record {
  uint8_t *p;
  size_t size;
} record_t;

static void test_contents_survive_until_reset(void **state) {
  (void)state;
  enum { N = 3000 };
  record_t *recs = calloc(N, sizeof *recs);
  assert_non_null(recs);
  keel_arena_t *a = open_arena(512, 0); /* small chunks: many of them */
  for (size_t i = 0; i < N; i++) {
    recs[i].size = (size_t)(rng() % 300); /* above ~108 bytes: own blocks */
    recs[i].p = keel_arena_alloc(a, recs[i].size);
    assert_non_null(recs[i].p);
    for (size_t j = 0; j < recs[i].size; j++)
      recs[i].p[j] = fill_byte(i, j);
  }
  for (size_t i = 0; i < N; i++)
    for (size_t j = 0; j < recs[i].size; j++)
      if (recs[i].p[j] != fill_byte(i, j))
        fail_msg("allocation %zu byte %zu: %u, wrote %u", i, j, recs[i].p[j], fill_byte(i, j));

  /* Size 0: distinct pointers, none equal to another allocation's. */
  enum { Z = 200 };
  void *zero[Z];
  for (size_t i = 0; i < Z; i++) {
    zero[i] = keel_arena_alloc(a, 0);
    assert_non_null(zero[i]);
    for (size_t k = 0; k < i; k++)
      assert_ptr_not_equal(zero[i], zero[k]);
  }
  assert_int_equal(keel_arena_close(a), 0);
  free(recs);
}

/* Allocations spanning several chunks and a few large blocks. */
static void big_pattern(keel_arena_t *a) {
  for (int i = 0; i < 200; i++)
    memset(keel_arena_alloc(a, 100), i, 100);
  for (int i = 0; i < 3; i++)
    memset(keel_arena_alloc(a, 2000), i, 2000);
  assert_non_null(keel_arena_strndup(a, "content-type", 12));
}

static void test_reset_keeps_first_chunk(void **state) {
  (void)state;
  keel_arena_t *a = open_arena(1024, 0);
  size_t held0 = keel_arena_held(a);
  assert_int_equal(held0, 1024);
  void *first = keel_arena_alloc(a, 32);
  for (int i = 0; i < 10; i++) /* fits in the first chunk */
    assert_non_null(keel_arena_alloc(a, 48));
  assert_int_equal(keel_arena_held(a), held0);

  keel_arena_reset(a);
  assert_int_equal(keel_arena_held(a), held0);
  assert_int_equal(keel_arena_used(a), 0);
  /* The first chunk was kept: the same allocation lands where it did. */
  assert_ptr_equal(keel_arena_alloc(a, 32), first);
  for (int i = 0; i < 10; i++)
    assert_non_null(keel_arena_alloc(a, 48));
  assert_int_equal(keel_arena_held(a), held0);

  keel_arena_reset(a);
  big_pattern(a);
  size_t held_pattern = keel_arena_held(a);
  assert_true(held_pattern > held0 + 4 * 1024);
  for (int round = 0; round < 50; round++) {
    keel_arena_reset(a);
    assert_int_equal(keel_arena_held(a), held0);
    assert_int_equal(keel_arena_used(a), 0);
    big_pattern(a);
    assert_int_equal(keel_arena_held(a), held_pattern);
  }
  assert_int_equal(keel_arena_close(a), 0);
}

static void test_large_blocks(void **state) {
  (void)state;
  keel_arena_t *a = open_arena(4096, 0);
  size_t held0 = keel_arena_held(a);
  char *s1 = keel_arena_alloc(a, 16);
  size_t used = keel_arena_used(a);
  char *big = keel_arena_alloc(a, 3000);
  assert_non_null(big);
  memset(big, 0x5a, 3000);
  size_t held_big = keel_arena_held(a);
  assert_true(held_big >= held0 + 3000 && held_big < held0 + 3000 + 256);
  assert_int_equal(keel_arena_used(a), used + 3000);
  /* The block did not use up the chunk: the next small one is adjacent. */
  assert_ptr_equal(keel_arena_alloc(a, 16), s1 + 16);

  char *page = keel_arena_alloc_aligned(a, 5000, 4096);
  assert_non_null(page);
  assert_true(aligned(page, 4096));
  memset(page, 0x33, 5000);
  assert_true(keel_arena_held(a) >= held_big + 5000);

  keel_arena_reset(a);
  assert_int_equal(keel_arena_held(a), held0);
  for (int i = 0; i < 100; i++)
    memset(keel_arena_alloc(a, 10000), i, 10000);
  assert_true(keel_arena_held(a) >= held0 + 100 * 10000);
  keel_arena_reset(a);
  assert_int_equal(keel_arena_held(a), held0);
  assert_int_equal(keel_arena_close(a), 0);
}

static void noop(void *arg) { (void)arg; }

/* Allocates 64-byte objects until the arena refuses; returns how many. */
static int fill_to_limit(keel_arena_t *a, size_t max_bytes) {
  int n = 0;
  while (keel_arena_alloc(a, 64)) {
    assert_true(keel_arena_held(a) <= max_bytes);
    assert_true(++n < 1000);
  }
  return n;
}

static void test_max_bytes(void **state) {
  (void)state;
  keel_arena_t *a = open_arena(1024, 4096);
  assert_null(keel_arena_alloc(a, 5000)); /* a block past the limit */
  assert_int_equal(keel_arena_held(a), 1024);
  int n = fill_to_limit(a, 4096);
  assert_true(n > 3 * (1024 / 64) - 3);
  assert_int_equal(keel_arena_held(a), 4096); /* four whole chunks */
  /* What is left of the last chunk is under 64 bytes: use it up. */
  int tail = 0;
  while (keel_arena_alloc_aligned(a, 1, 1))
    assert_true(++tail < 64);
  assert_int_equal(keel_arena_held(a), 4096);
  assert_null(keel_arena_alloc(a, 1));
  assert_null(keel_arena_alloc(a, 0));
  assert_null(keel_arena_strndup(a, "", 0));
  assert_int_equal(keel_arena_defer(a, noop, NULL), -ENOMEM);

  keel_arena_reset(a);
  assert_int_equal(keel_arena_held(a), 1024);
  assert_int_equal(fill_to_limit(a, 4096), n);

  keel_arena_reset(a);
  void *block = keel_arena_alloc(a, 2000); /* 1024 + ~2 KiB: within */
  assert_non_null(block);
  memset(block, 1, 2000);
  assert_null(keel_arena_alloc(a, 2000)); /* a second one is not */
  assert_true(keel_arena_held(a) <= 4096);
  assert_int_equal(keel_arena_close(a), 0);
}

static void expect_refused(keel_arena_t *a, size_t size) {
  static const char src[64] = "no byte of this is read";
  assert_null(keel_arena_alloc(a, size));
  assert_null(keel_arena_alloc_aligned(a, size, 1));
  assert_null(keel_arena_alloc_aligned(a, size, 4096));
  assert_null(keel_arena_memdup(a, src, size));
  assert_null(keel_arena_strndup(a, src, size));
}

static void test_overflow_sizes(void **state) {
  (void)state;
  static const size_t sizes[] = {
      SIZE_MAX,
      SIZE_MAX - 1,
      SIZE_MAX - 15,
      SIZE_MAX - 16,
      SIZE_MAX - 100,
      SIZE_MAX - 4095,
      SIZE_MAX - 4096 - 64,
      SIZE_MAX / 2 + 1,
      SIZE_MAX / 2,
      (size_t)PTRDIFF_MAX + 1,
  };
  keel_arena_t *unlimited = open_arena(0, 0);
  keel_arena_t *smallest = open_arena(KEEL_ARENA_MIN_CHUNK, 0);
  keel_arena_t *limited = open_arena(1024, 8192);
  keel_arena_t *arenas[] = {unlimited, smallest, limited};
  for (size_t k = 0; k < 3; k++) {
    size_t held0 = keel_arena_held(arenas[k]);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
      expect_refused(arenas[k], sizes[i]);
    /* n + 1 for the NUL would pass PTRDIFF_MAX. */
    assert_null(keel_arena_strndup(arenas[k], "x", (size_t)PTRDIFF_MAX));
    assert_int_equal(keel_arena_held(arenas[k]), held0);
    assert_int_equal(keel_arena_used(arenas[k]), 0);
    memset(keel_arena_alloc(arenas[k], 16), 0, 16); /* still works */
    assert_int_equal(keel_arena_close(arenas[k]), 0);
  }
}

typedef struct defer_log {
  int order[32];
  int n;
} defer_log_t;

typedef struct defer_rec {
  defer_log_t *log;
  keel_arena_t *arena; /* for chain_cb */
  int id;
} defer_rec_t;

static void record_cb(void *arg) {
  defer_rec_t *r = arg;
  assert_true(r->log->n < 32);
  r->log->order[r->log->n++] = r->id;
}

/* Registers rec id + 100 from inside a reset. */
static void chain_cb(void *arg) {
  defer_rec_t *r = arg;
  record_cb(r);
  defer_rec_t *next = keel_arena_alloc(r->arena, sizeof *next);
  assert_non_null(next);
  *next = (defer_rec_t){.log = r->log, .id = r->id + 100};
  assert_int_equal(keel_arena_defer(r->arena, record_cb, next), 0);
}

/* Registers rec id with its record in the arena, behind filler that puts
 * it in a later chunk: a callback running after the chunk was freed would
 * read freed memory (ASan reports it). */
static void defer_in_arena(keel_arena_t *a, defer_log_t *log, int id, void (*fn)(void *)) {
  for (int i = 0; i < 20; i++)
    assert_non_null(keel_arena_alloc(a, 40));
  defer_rec_t *r = keel_arena_alloc(a, sizeof *r);
  assert_non_null(r);
  *r = (defer_rec_t){.log = log, .arena = a, .id = id};
  assert_int_equal(keel_arena_defer(a, fn, r), 0);
}

static void expect_order(const defer_log_t *log, const int *want, int n) {
  assert_int_equal(log->n, n);
  for (int i = 0; i < n; i++)
    if (log->order[i] != want[i])
      fail_msg("callback %d ran as #%d: wanted %d", log->order[i], i, want[i]);
}

static void test_defer(void **state) {
  (void)state;
  defer_log_t log = {0};
  keel_arena_t *a = open_arena(KEEL_ARENA_MIN_CHUNK, 0);
  for (int id = 0; id < 5; id++)
    defer_in_arena(a, &log, id, record_cb);
  assert_int_equal(log.n, 0);
  keel_arena_reset(a);
  expect_order(&log, (const int[]){4, 3, 2, 1, 0}, 5);
  keel_arena_reset(a); /* each ran once: none is left */
  assert_int_equal(log.n, 5);

  log.n = 0;
  defer_in_arena(a, &log, 0, record_cb);
  defer_in_arena(a, &log, 1, chain_cb);
  keel_arena_reset(a);
  expect_order(&log, (const int[]){1, 101, 0}, 3);
  keel_arena_reset(a);
  assert_int_equal(log.n, 3);

  log.n = 0;
  for (int id = 5; id < 8; id++)
    defer_in_arena(a, &log, id, record_cb);
  assert_int_equal(keel_arena_close(a), 0);
  expect_order(&log, (const int[]){7, 6, 5}, 3);
}

typedef struct sample {
  double d;
  long l;
  char tag[13];
} sample_t;

static void test_copies(void **state) {
  (void)state;
  keel_arena_t *a = open_arena(0, 0);
  char *s = keel_arena_strndup(a, "hello, world", 5);
  assert_string_equal(s, "hello");
  /* Exactly n bytes, a NUL inside included. */
  char *nul = keel_arena_strndup(a, "a\0b", 3);
  assert_memory_equal(nul, "a\0b", 4);
  char *empty = keel_arena_strndup(a, NULL, 0);
  assert_non_null(empty);
  assert_int_equal(empty[0], '\0');
  /* Strings are byte-aligned: consecutive copies are packed. */
  char *s1 = keel_arena_strndup(a, "ab", 2);
  char *s2 = keel_arena_strndup(a, "cd", 2);
  assert_ptr_equal(s2, s1 + 3);
  assert_string_equal(s1, "ab");
  assert_string_equal(s2, "cd");

  sample_t src = {.d = 2.5, .l = -7, .tag = "x-request-id"};
  sample_t *copy = keel_arena_memdup(a, &src, sizeof src);
  assert_true(aligned(copy, MAX_ALIGN));
  assert_memory_equal(copy, &src, sizeof src);
  src.l = 9; /* a copy, not an alias */
  assert_int_equal(copy->l, -7);
  assert_non_null(keel_arena_memdup(a, NULL, 0));

  char big[3000];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (char)fill_byte(i, 3);
  assert_memory_equal(keel_arena_memdup(a, big, sizeof big), big, sizeof big);
  char *bigstr = keel_arena_strndup(a, big, sizeof big);
  assert_memory_equal(bigstr, big, sizeof big);
  assert_int_equal(bigstr[sizeof big], '\0');
  assert_int_equal(keel_arena_close(a), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_invalid_opts),
      cmocka_unit_test(test_alignment_mixed),
      cmocka_unit_test(test_contents_survive_until_reset),
      cmocka_unit_test(test_reset_keeps_first_chunk),
      cmocka_unit_test(test_large_blocks),
      cmocka_unit_test(test_max_bytes),
      cmocka_unit_test(test_overflow_sizes),
      cmocka_unit_test(test_defer),
      cmocka_unit_test(test_copies),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
