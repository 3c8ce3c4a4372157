/* keel-load's latency histogram: merge and percentile queries (hist.h). */
#include "hist.h"

#include <math.h>
#include <string.h>

void hist_init(hist_t *h) {
  memset(h, 0, sizeof *h);
  h->min_ns = UINT64_MAX;
}

uint64_t hist_bucket_low(unsigned b) {
  if (b < HIST_SUB_COUNT)
    return b;
  unsigned shift = (b - HIST_SUB_COUNT) / HIST_SUB_COUNT;
  uint64_t sub = (b - HIST_SUB_COUNT) % HIST_SUB_COUNT;
  return (HIST_SUB_COUNT + sub) << shift;
}

uint64_t hist_bucket_width(unsigned b) {
  if (b < HIST_SUB_COUNT)
    return 1;
  return UINT64_C(1) << ((b - HIST_SUB_COUNT) / HIST_SUB_COUNT);
}

void hist_merge(hist_t *dst, const hist_t *src) {
  for (unsigned b = 0; b < HIST_BUCKETS; b++)
    dst->buckets[b] += src->buckets[b];
  dst->count += src->count;
  dst->sum_ns += src->sum_ns;
  if (src->min_ns < dst->min_ns)
    dst->min_ns = src->min_ns;
  if (src->max_ns > dst->max_ns)
    dst->max_ns = src->max_ns;
}

/* The bucket's middle stands for its values: half a bucket width (at most
 * 1/256 of the value) from any of them. The exact min and max bound it, so
 * a histogram of one value reports that value at every quantile. */
static uint64_t bucket_value(const hist_t *h, unsigned b) {
  uint64_t v = hist_bucket_low(b) + (hist_bucket_width(b) - 1) / 2;
  if (v < h->min_ns)
    v = h->min_ns;
  if (v > h->max_ns)
    v = h->max_ns;
  return v;
}

uint64_t hist_quantile(const hist_t *h, double q) {
  if (h->count == 0)
    return 0;
  if (q >= 1.0)
    return h->max_ns;
  uint64_t rank = (uint64_t)ceil(q * (double)h->count);
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (unsigned b = 0; b < HIST_BUCKETS; b++) {
    seen += h->buckets[b];
    if (seen >= rank)
      return bucket_value(h, b);
  }
  return h->max_ns; /* unreachable while the counts add up */
}

double hist_mean(const hist_t *h) { return h->count ? h->sum_ns / (double)h->count : 0.0; }
