/* Errors, logging, names and the clock. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* The log threshold is process configuration, not loop state. */
static _Atomic int log_level = -1;

const char *keel_strerror(int err) {
  if (err < 0)
    err = -err;
  if (err == 0)
    return "Success";
  const char *desc = strerrordesc_np(err);
  return desc ? desc : "Unknown error";
}

const char *keel_cancel_reason_name(keel_cancel_reason_t r) {
  switch (r) {
  case KEEL_CANCEL_NONE:
    return "none";
  case KEEL_CANCEL_USER:
    return "user";
  case KEEL_CANCEL_TIMEOUT:
    return "timeout";
  case KEEL_CANCEL_FAIL_FAST:
    return "fail-fast";
  case KEEL_CANCEL_PARENT:
    return "parent";
  case KEEL_CANCEL_SHUTDOWN:
    return "shutdown";
  }
  return "unknown";
}

void keel_log_set_level(keel_log_level_t level) { atomic_store(&log_level, (int)level); }

static int log_threshold(void) {
  int level = atomic_load_explicit(&log_level, memory_order_relaxed);
  if (KEEL__LIKELY(level >= 0))
    return level;
  const char *env = getenv("KEEL_LOG");
  level = KEEL_LOG_INFO;
  if (env && !strcasecmp(env, "debug"))
    level = KEEL_LOG_DEBUG;
  else if (env && !strcasecmp(env, "warn"))
    level = KEEL_LOG_WARN;
  else if (env && !strcasecmp(env, "error"))
    level = KEEL_LOG_ERROR;
  atomic_store(&log_level, level);
  return level;
}

void keel_log(keel_log_level_t level, const char *fmt, ...) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  if ((int)level < log_threshold())
    return;
  char line[512];
  int id = keel_worker_id();
  int n = id >= 0 ? snprintf(line, sizeof line, "keel[%d] %s: ", id, names[level & 3])
                  : snprintf(line, sizeof line, "keel: %s: ", names[level & 3]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2)
    len = sizeof line - 2;
  line[len++] = '\n';
  /* One write per line keeps lines from different workers whole. */
  ssize_t rc = write(STDERR_FILENO, line, len);
  (void)rc;
}

void keel__set_name(char *dst, const char *src, const char *dflt) {
  if (!src)
    src = dflt;
  size_t n = strnlen(src, KEEL__NAME_MAX - 1);
  memcpy(dst, src, n);
  dst[n] = '\0';
}

int64_t keel__now_ns(void) {
  keel__worker_t *w = keel__tls_worker;
  if (KEEL__UNLIKELY(w && w->clock))
    return w->clock(w);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * KEEL_NS_PER_SEC + ts.tv_nsec;
}

int64_t keel_now_ns(void) { return keel__now_ns(); }
