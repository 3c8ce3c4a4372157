/* Internal header: logging's pieces (log.c, log-format.c, log-rate.c). */
#ifndef KEEL_LOG_INTERNAL_H
#define KEEL_LOG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/core.h"

/* ---- Formatting (log-format.c) ------------------------------------------- */

/* Formats rec into buf (size bytes, at least 128) as text or JSON: returns
 * the line's length, newline included (a NUL follows). truncated: the
 * message was already cut, so the line says so even if it fits. */
size_t keel__log_format(char *buf, size_t size, keel_log_format_t format,
                        const keel_log_record_t *rec, bool truncated);

/* Where to cut s, which goes on past len bytes, so that no UTF-8 sequence
 * is left incomplete: len, or the start of the sequence the cut splits. */
static inline size_t keel__utf8_cut(const char *s, size_t len) {
  size_t i = len, continuations = 0;
  while (i > 0 && continuations < 3 && ((unsigned char)s[i - 1] & 0xc0) == 0x80) {
    i--;
    continuations++;
  }
  if (i == 0)
    return len;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return need > continuations + 1 ? i - 1 : len;
}

/* ---- Rate limit (log-rate.c) ---------------------------------------------- */

#define KEEL__LOG_RATE_MSG 128 /* bytes of a message a summary repeats */

/* A count of dropped lines to report. */
typedef struct keel__log_summary {
  keel_log_level_t level;
  uint64_t suppressed; /* 0: nothing to report */
  char msg[KEEL__LOG_RATE_MSG];
} keel__log_summary_t;

/* Whether a line may be written at now_ns (monotonic): identical lines
 * (same level, message and fields) pass burst times per window. A count
 * that the line's entry held (its window ended, or the line takes over
 * another line's entry) goes to *report, to be written first. */
bool keel__log_rate_admit(keel_log_level_t level, const char *msg, const keel_log_field_t *fields,
                          size_t nfields, int64_t now_ns, keel__log_summary_t *report);

/* True when some count of dropped lines may have come due by now_ns. */
bool keel__log_rate_due(int64_t now_ns);

/* Hands each count due by now_ns (every count, when all) to report, which
 * writes it; returns how many. */
int keel__log_rate_collect(int64_t now_ns, bool all, void (*report)(const keel__log_summary_t *));

#endif
