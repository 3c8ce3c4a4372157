/* keel-load's latency histogram: HDR-style log-linear buckets in fixed memory.
 *
 * Values (nanoseconds) below HIST_SUB_COUNT have a bucket each; above that,
 * every power of two is split into HIST_SUB_COUNT linear sub-buckets, so a
 * bucket is at most 1/128 of its value wide (a reported percentile is within
 * 0.4% of a recorded value). Values above HIST_MAX_NS (100 s) clamp to it.
 * Recording allocates nothing and is a handful of instructions; histograms
 * are kept per worker and merged at the end. */
#ifndef KEEL_LOAD_HIST_H
#define KEEL_LOAD_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB_COUNT (1u << HIST_SUB_BITS)
#define HIST_MAX_NS UINT64_C(100000000000) /* 100 s */
#define HIST_TOP_EXP 36                    /* 2^36 <= HIST_MAX_NS < 2^37 */
#define HIST_BUCKETS (HIST_SUB_COUNT + (HIST_TOP_EXP - HIST_SUB_BITS + 1) * HIST_SUB_COUNT)

typedef struct hist {
  uint64_t count;
  uint64_t min_ns; /* exact, after clamping; UINT64_MAX while empty */
  uint64_t max_ns;
  double sum_ns; /* for the mean; a double cannot overflow at 100 s per value */
  uint64_t buckets[HIST_BUCKETS];
} hist_t;

void hist_init(hist_t *h);

/* Index of the bucket holding ns (already clamped to HIST_MAX_NS). */
static inline unsigned hist_bucket(uint64_t ns) {
  if (ns < HIST_SUB_COUNT)
    return (unsigned)ns;
  unsigned exp = 63u - (unsigned)__builtin_clzll(ns);
  unsigned sub = (unsigned)(ns >> (exp - HIST_SUB_BITS)) - HIST_SUB_COUNT;
  return HIST_SUB_COUNT + (exp - HIST_SUB_BITS) * HIST_SUB_COUNT + sub;
}

static inline void hist_record(hist_t *h, uint64_t ns) {
  if (ns > HIST_MAX_NS)
    ns = HIST_MAX_NS;
  h->buckets[hist_bucket(ns)]++;
  h->count++;
  h->sum_ns += (double)ns;
  if (ns < h->min_ns)
    h->min_ns = ns;
  if (ns > h->max_ns)
    h->max_ns = ns;
}

/* Smallest value that falls in bucket b, and the bucket's width. */
uint64_t hist_bucket_low(unsigned b);
uint64_t hist_bucket_width(unsigned b);

/* Adds src's values to dst. */
void hist_merge(hist_t *dst, const hist_t *src);

/* Value at quantile q (0 < q <= 1): the middle of the bucket holding the
 * ceil(q * count)-th smallest value, kept within [min, max]; q = 1 gives the
 * exact max. 0 for an empty histogram. */
uint64_t hist_quantile(const hist_t *h, double q);

/* Mean of the recorded values (0 when empty). */
double hist_mean(const hist_t *h);

#endif
