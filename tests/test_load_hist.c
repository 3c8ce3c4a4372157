/* keel-load's latency histogram (tools/keel-load/hist.c): the buckets tile
 * 0 .. 100 s with at most 1/128 relative width, percentiles of known
 * distributions land within that precision of the exact ones, merging equals
 * recording everything in one, and the extremes (0, 1 ns, 100 s, beyond)
 * are kept or clamped, never lost. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"

#define LH_SAMPLES 200000
static const double lh_quantiles[] = {0.5, 0.9, 0.99, 0.999};

/* Deterministic pseudo-random numbers (xorshift64*). */
static uint64_t lh_next(uint64_t *state) {
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * UINT64_C(2685821657736338717);
}

static int lh_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* The exact quantile: the ceil(q * n)-th smallest value. */
static uint64_t lh_exact(const uint64_t *sorted, size_t n, double q) {
  size_t rank = (size_t)ceil(q * (double)n);
  return sorted[(rank ? rank : 1) - 1];
}

/* Within the histogram's precision: half a bucket, 1/256 of the value. */
static void lh_assert_close(uint64_t got, uint64_t exact) {
  uint64_t slack = exact / 256 + 1;
  assert_in_range(got, exact > slack ? exact - slack : 0, exact + slack);
}

static hist_t *lh_new(void) {
  hist_t *h = malloc(sizeof *h);
  assert_non_null(h);
  hist_init(h);
  return h;
}

static void test_buckets_tile_the_range(void **state) {
  (void)state;
  uint64_t next_low = 0;
  unsigned top = hist_bucket(HIST_MAX_NS);
  assert_true(top < HIST_BUCKETS);
  for (unsigned b = 0; b <= top; b++) {
    uint64_t low = hist_bucket_low(b), width = hist_bucket_width(b);
    assert_int_equal(low, next_low); /* no gap, no overlap */
    assert_int_equal(hist_bucket(low), b);
    assert_int_equal(hist_bucket(low + width - 1), b);
    if (b >= HIST_SUB_COUNT)
      assert_true(width * HIST_SUB_COUNT <= low); /* <= 1/128 relative width */
    next_low = low + width;
  }
  assert_true(next_low > HIST_MAX_NS);
}

static void test_small_values_are_exact(void **state) {
  (void)state;
  hist_t *h = lh_new();
  for (uint64_t v = 0; v < HIST_SUB_COUNT; v++)
    hist_record(h, v);
  assert_int_equal(h->count, HIST_SUB_COUNT);
  assert_int_equal(hist_quantile(h, 0.5), 63); /* the 64th of 0 .. 127 */
  assert_int_equal(hist_quantile(h, 0.99), 126);
  assert_int_equal(hist_quantile(h, 1.0), 127);
  assert_int_equal(h->min_ns, 0);
  assert_true(fabs(hist_mean(h) - 63.5) < 1e-9);
  free(h);
}

static void test_uniform_distribution(void **state) {
  (void)state;
  hist_t *h = lh_new();
  for (uint64_t v = 1; v <= 1000000; v++)
    hist_record(h, v);
  for (size_t i = 0; i < sizeof lh_quantiles / sizeof lh_quantiles[0]; i++) {
    uint64_t exact = (uint64_t)ceil(lh_quantiles[i] * 1e6); /* value == rank */
    lh_assert_close(hist_quantile(h, lh_quantiles[i]), exact);
  }
  assert_int_equal(h->min_ns, 1);
  assert_int_equal(hist_quantile(h, 1.0), 1000000);
  assert_true(fabs(hist_mean(h) - 500000.5) < 1e-6);
  free(h);
}

/* Log-uniform from 1 us to 10 s: every bucket width the histogram has in
 * that span is exercised. */
static void lh_fill_log_uniform(uint64_t *values, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) {
    double u = (double)(lh_next(&seed) >> 11) / 9007199254740992.0;
    values[i] = (uint64_t)(1e3 * pow(1e7, u));
  }
}

static void test_log_uniform_distribution(void **state) {
  (void)state;
  uint64_t *values = malloc(LH_SAMPLES * sizeof *values);
  assert_non_null(values);
  lh_fill_log_uniform(values, LH_SAMPLES, 42);
  hist_t *h = lh_new();
  for (size_t i = 0; i < LH_SAMPLES; i++)
    hist_record(h, values[i]);
  qsort(values, LH_SAMPLES, sizeof *values, lh_cmp);
  for (size_t i = 0; i < sizeof lh_quantiles / sizeof lh_quantiles[0]; i++)
    lh_assert_close(hist_quantile(h, lh_quantiles[i]),
                    lh_exact(values, LH_SAMPLES, lh_quantiles[i]));
  assert_int_equal(h->min_ns, values[0]);
  assert_int_equal(h->max_ns, values[LH_SAMPLES - 1]);
  assert_int_equal(hist_quantile(h, 1.0), values[LH_SAMPLES - 1]);
  free(h);
  free(values);
}

static void test_merge_equals_one_histogram(void **state) {
  (void)state;
  uint64_t *values = malloc(LH_SAMPLES * sizeof *values);
  assert_non_null(values);
  lh_fill_log_uniform(values, LH_SAMPLES, 7);
  hist_t *all = lh_new(), *even = lh_new(), *odd = lh_new(), *merged = lh_new();
  for (size_t i = 0; i < LH_SAMPLES; i++) {
    hist_record(all, values[i]);
    hist_record(i % 2 ? odd : even, values[i]);
  }
  hist_merge(merged, even);
  hist_merge(merged, odd);
  assert_int_equal(merged->count, all->count);
  assert_int_equal(merged->min_ns, all->min_ns);
  assert_int_equal(merged->max_ns, all->max_ns);
  assert_memory_equal(merged->buckets, all->buckets, sizeof all->buckets);
  assert_true(fabs(hist_mean(merged) - hist_mean(all)) <= 1e-9 * hist_mean(all));
  for (size_t i = 0; i < sizeof lh_quantiles / sizeof lh_quantiles[0]; i++)
    assert_int_equal(hist_quantile(merged, lh_quantiles[i]), hist_quantile(all, lh_quantiles[i]));
  hist_t *empty = lh_new();
  hist_merge(merged, empty); /* an empty one changes nothing, min included */
  assert_int_equal(merged->min_ns, all->min_ns);
  free(empty);
  free(all);
  free(even);
  free(odd);
  free(merged);
  free(values);
}

static void test_extremes(void **state) {
  (void)state;
  hist_t *h = lh_new();
  assert_int_equal(hist_quantile(h, 0.5), 0); /* empty */
  assert_true(hist_mean(h) == 0.0);
  hist_record(h, 0);
  assert_int_equal(hist_quantile(h, 0.5), 0);
  assert_int_equal(hist_quantile(h, 1.0), 0);
  hist_init(h);
  hist_record(h, 1);
  assert_int_equal(hist_quantile(h, 0.5), 1);
  assert_int_equal(hist_quantile(h, 0.999), 1);
  hist_init(h);
  hist_record(h, HIST_MAX_NS);
  assert_int_equal(hist_quantile(h, 0.5), HIST_MAX_NS); /* one value: reported exactly */
  assert_int_equal(h->max_ns, HIST_MAX_NS);
  hist_record(h, 10 * HIST_MAX_NS);
  hist_record(h, UINT64_MAX);
  assert_int_equal(h->count, 3);
  assert_int_equal(h->max_ns, HIST_MAX_NS); /* clamped */
  assert_int_equal(h->buckets[hist_bucket(HIST_MAX_NS)], 3);
  assert_int_equal(hist_quantile(h, 0.999), HIST_MAX_NS);
  hist_record(h, 1);
  assert_int_equal(h->min_ns, 1);
  assert_int_equal(hist_quantile(h, 0.25), 1);
  assert_int_equal(hist_quantile(h, 1.0), HIST_MAX_NS);
  free(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_buckets_tile_the_range),
      cmocka_unit_test(test_small_values_are_exact),
      cmocka_unit_test(test_uniform_distribution),
      cmocka_unit_test(test_log_uniform_distribution),
      cmocka_unit_test(test_merge_equals_one_histogram),
      cmocka_unit_test(test_extremes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
