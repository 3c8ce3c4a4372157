/* keel_random: xoroshiro128+ per worker (per thread outside workers). */
#include <sys/random.h>

#include "internal.h"

static _Thread_local uint64_t thread_rng[2];

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

void keel__rng_seed(uint64_t s[2], uint64_t seed) {
  s[0] = splitmix64(&seed);
  s[1] = splitmix64(&seed);
  if ((s[0] | s[1]) == 0)
    s[1] = 1;
}

void keel__rng_seed_random(uint64_t s[2]) {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
    seed = (uint64_t)keel__now_ns() ^ (uint64_t)(uintptr_t)s;
  keel__rng_seed(s, seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t keel__rng_next(uint64_t s[2]) {
  uint64_t s0 = s[0], s1 = s[1];
  uint64_t r = s0 + s1;
  s1 ^= s0;
  s[0] = rotl(s0, 24) ^ s1 ^ (s1 << 16);
  s[1] = rotl(s1, 37);
  return r;
}

uint64_t keel_random(void) {
  keel__worker_t *w = keel__worker_current();
  if (w)
    return keel__rng_next(w->rng);
  if ((thread_rng[0] | thread_rng[1]) == 0)
    keel__rng_seed_random(thread_rng);
  return keel__rng_next(thread_rng);
}

uint64_t keel_random_below(uint64_t bound) {
  if (bound == 0)
    return 0;
  /* Lemire's multiply-shift with rejection: unbiased. */
  uint64_t x = keel_random();
  __uint128_t m = (__uint128_t)x * bound;
  uint64_t lo = (uint64_t)m;
  if (lo < bound) {
    uint64_t t = -bound % bound;
    while (lo < t) {
      x = keel_random();
      m = (__uint128_t)x * bound;
      lo = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}
