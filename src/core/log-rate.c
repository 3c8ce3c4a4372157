/* The log's rate limit: identical lines past a burst per window are
 * dropped and counted, and the count is reported once the window passes. */
#include <stdatomic.h>
#include <string.h>

#include "log-internal.h"
#include "spin.h"

/* Lines seen lately, by hash, four to a bucket: a line takes over the
 * entry that matters least, so a flooding line keeps its entry (and its
 * count) while other lines come and go. */
#define RATE_BUCKETS 64 /* a power of two */
#define RATE_WAYS 4

/* A line's current window. */
typedef struct rate_entry {
  uint64_t hash; /* 0: unused */
  int64_t window_start_ns;
  uint32_t count;      /* lines written in this window */
  uint64_t suppressed; /* dropped and not reported yet */
  keel_log_level_t level;
  char msg[KEEL__LOG_RATE_MSG];
} rate_entry_t;

typedef struct rate_bucket {
  keel__spinlock_t lock;
  rate_entry_t entries[RATE_WAYS];
} rate_bucket_t;

/* Process-wide, like the rest of the log's settings (log.c): lines come
 * from every thread of the process, not from one loop. Each bucket has its
 * own lock, held for a few loads and stores, so threads logging different
 * lines rarely meet. */
static rate_bucket_t rate_buckets[RATE_BUCKETS];
static atomic_uint rate_burst = 10;
static _Atomic int64_t rate_window_ns = INT64_C(5000) * 1000000;
/* No count comes due before this time (monotonic ns): most lines pass the
 * check for one with a single load. */
static _Atomic int64_t rate_due_ns = INT64_MAX;

void keel_log_set_rate_limit(unsigned burst, unsigned window_ms) {
  atomic_store(&rate_burst, burst);
  atomic_store(&rate_window_ns, (int64_t)window_ms * 1000000);
  /* Counts already taken come due by the new window: look at them all at
   * the next line. */
  atomic_store(&rate_due_ns, INT64_MIN);
}

/* Lowers rate_due_ns to at most when. */
static void due_at_most(int64_t when) {
  int64_t due = atomic_load(&rate_due_ns);
  while (when < due && !atomic_compare_exchange_weak(&rate_due_ns, &due, when))
    ;
}

/* What makes two lines identical: level, message and fields. */
static uint64_t line_hash(keel_log_level_t level, const char *msg, const keel_log_field_t *fields,
                          size_t nfields) {
  /* FNV-1a over the level, the message and each field; a NUL ends each
   * string so that ("ab","c") and ("a","bc") differ. */
  uint64_t h = UINT64_C(0xcbf29ce484222325) ^ (uint64_t)level;
  const uint64_t prime = UINT64_C(0x100000001b3);
  for (const char *p = msg; *p; p++)
    h = (h ^ (unsigned char)*p) * prime;
  for (size_t i = 0; i < nfields; i++) {
    const keel_log_field_t *f = &fields[i];
    h = (h ^ 0xff) * prime;
    for (const char *p = f->key ? f->key : ""; *p; p++)
      h = (h ^ (unsigned char)*p) * prime;
    h = (h ^ (uint64_t)f->type) * prime;
    if (f->type == KEEL_LOG_FIELD_STR) {
      for (const char *p = f->v.str ? f->v.str : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * prime;
      h = (h ^ (f->v.str == NULL)) * prime;
    } else {
      uint64_t bits = 0;
      memcpy(&bits, &f->v, sizeof bits < sizeof f->v ? sizeof bits : sizeof f->v);
      h = (h ^ (f->type == KEEL_LOG_FIELD_BOOL ? (uint64_t)f->v.b : bits)) * prime;
    }
  }
  return h ? h : 1;
}

/* Moves the entry's count to *report (the bucket's lock held). */
static void take_count(rate_entry_t *e, keel__log_summary_t *report) {
  report->level = e->level;
  report->suppressed = e->suppressed;
  memcpy(report->msg, e->msg, sizeof report->msg);
  e->suppressed = 0;
}

/* True if a is a better entry to take over than b: an unused one, then
 * one without a count to report, then the oldest window. */
static bool better_victim(const rate_entry_t *a, const rate_entry_t *b) {
  if ((a->hash == 0) != (b->hash == 0))
    return a->hash == 0;
  if ((a->suppressed == 0) != (b->suppressed == 0))
    return a->suppressed == 0;
  return a->window_start_ns < b->window_start_ns;
}

/* The entry of hash in b, or the one it is to take over. */
static rate_entry_t *find_entry(rate_bucket_t *b, uint64_t hash) {
  rate_entry_t *victim = &b->entries[0];
  for (size_t i = 0; i < RATE_WAYS; i++) {
    if (b->entries[i].hash == hash)
      return &b->entries[i];
    if (better_victim(&b->entries[i], victim))
      victim = &b->entries[i];
  }
  return victim;
}

/* Starts a window for the line in e, reporting what e held first. */
static void start_window(rate_entry_t *e, uint64_t hash, keel_log_level_t level, const char *msg,
                         int64_t now_ns, keel__log_summary_t *report) {
  if (e->suppressed)
    take_count(e, report);
  e->hash = hash;
  e->level = level;
  e->window_start_ns = now_ns;
  e->count = 1;
  size_t n = strnlen(msg, sizeof e->msg - 1);
  if (msg[n] != '\0')
    n = keel__utf8_cut(msg, n);
  memcpy(e->msg, msg, n);
  e->msg[n] = '\0';
}

bool keel__log_rate_admit(keel_log_level_t level, const char *msg, const keel_log_field_t *fields,
                          size_t nfields, int64_t now_ns, keel__log_summary_t *report) {
  report->suppressed = 0;
  uint32_t burst = atomic_load_explicit(&rate_burst, memory_order_relaxed);
  int64_t window = atomic_load_explicit(&rate_window_ns, memory_order_relaxed);
  if (burst == 0 || window <= 0)
    return true;
  uint64_t hash = line_hash(level, msg, fields, nfields);
  rate_bucket_t *b = &rate_buckets[hash & (RATE_BUCKETS - 1)];
  bool admit = true;
  keel__spin_lock(&b->lock);
  rate_entry_t *e = find_entry(b, hash);
  if (e->hash != hash || now_ns - e->window_start_ns >= window) {
    start_window(e, hash, level, msg, now_ns, report);
  } else if (e->count < burst) {
    e->count++;
  } else {
    admit = false;
    /* Under the lock, so that a collector that has just looked at this
     * bucket cannot miss the count: it moved rate_due_ns first. */
    if (e->suppressed++ == 0)
      due_at_most(e->window_start_ns + window);
  }
  keel__spin_unlock(&b->lock);
  return admit;
}

bool keel__log_rate_due(int64_t now_ns) {
  return now_ns >= atomic_load_explicit(&rate_due_ns, memory_order_relaxed);
}

/* Takes the counts of b (its lock held) that are due by now_ns (all:
 * every count) into due; returns how many. */
static int take_due(rate_bucket_t *b, int64_t now_ns, int64_t window, bool all,
                    keel__log_summary_t due[RATE_WAYS]) {
  int n = 0;
  for (size_t i = 0; i < RATE_WAYS; i++) {
    rate_entry_t *e = &b->entries[i];
    if (e->suppressed && (all || now_ns - e->window_start_ns >= window))
      take_count(e, &due[n++]);
    else if (e->suppressed)
      due_at_most(e->window_start_ns + window);
  }
  return n;
}

int keel__log_rate_collect(int64_t now_ns, bool all, void (*report)(const keel__log_summary_t *)) {
  /* One collector at a time, the one that moves the due time past now;
   * buckets it finds busy it leaves for the next line. */
  int64_t due = atomic_load(&rate_due_ns);
  do {
    if (!all && now_ns < due)
      return 0;
  } while (!atomic_compare_exchange_weak(&rate_due_ns, &due, INT64_MAX));
  int64_t window = atomic_load_explicit(&rate_window_ns, memory_order_relaxed);
  int reported = 0;
  for (size_t i = 0; i < RATE_BUCKETS; i++) {
    rate_bucket_t *b = &rate_buckets[i];
    if (all) {
      keel__spin_lock(&b->lock);
    } else if (!keel__spin_trylock(&b->lock)) {
      due_at_most(now_ns);
      continue;
    }
    keel__log_summary_t due_now[RATE_WAYS];
    int n = take_due(b, now_ns, window, all, due_now);
    keel__spin_unlock(&b->lock); /* the sink runs unlocked */
    for (int k = 0; k < n; k++)
      report(&due_now[k]);
    reported += n;
  }
  return reported;
}
