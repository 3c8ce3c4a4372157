/* Errors, logging, names and the clock. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "log-internal.h"

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

/* ---- Settings -------------------------------------------------------------
 * The level, the format, the rate limit (log-rate.c) and the sink are
 * process configuration, not loop state: lines come from every worker,
 * blocking-pool and application thread of the process, and the
 * environment they default from is process-wide too. So they are statics,
 * each read with one atomic load; -1: not read from the environment yet. */
static _Atomic int log_level = -1;
static _Atomic int log_format = -1;

const char *keel_log_level_name(keel_log_level_t level) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  return (unsigned)level <= KEEL_LOG_ERROR ? names[level] : "error";
}

void keel_log_set_level(keel_log_level_t level) { atomic_store(&log_level, (int)level); }

/* Sets *setting to the environment's value unless a setter got there
 * first; returns the setting. */
static int setting_from_env(_Atomic int *setting, int from_env) {
  int unset = -1;
  atomic_compare_exchange_strong(setting, &unset, from_env);
  return atomic_load(setting);
}

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
  return setting_from_env(&log_level, level);
}

bool keel_log_enabled(keel_log_level_t level) { return (int)level >= log_threshold(); }

int keel_log_set_format(keel_log_format_t format) {
  if (format != KEEL_LOG_TEXT && format != KEEL_LOG_JSON)
    return -EINVAL;
  atomic_store(&log_format, (int)format);
  return 0;
}

static keel_log_format_t log_format_now(void) {
  int format = atomic_load_explicit(&log_format, memory_order_relaxed);
  if (KEEL__LIKELY(format >= 0))
    return (keel_log_format_t)format;
  const char *env = getenv("KEEL_LOG_FORMAT");
  format = env && !strcasecmp(env, "json") ? KEEL_LOG_JSON : KEEL_LOG_TEXT;
  return (keel_log_format_t)setting_from_env(&log_format, format);
}

/* ---- The sink ---------------------------------------------------------------
 * The current sink is an immutable {fn, arg} published by one atomic
 * pointer. A line counts itself in the sink's calls before using it and
 * then checks that the sink is still current, so that keel_log_set_sink,
 * once it has swapped the pointer and seen calls at 0, knows that no call
 * is running or will start (the two seq_cst pairs of a store then a load:
 * one side always sees the other's). A line may still touch a retired
 * sink's count after that, so sinks are never freed. */
typedef struct log_sink {
  keel_log_sink_fn fn;
  void *arg;
  atomic_long calls;
  struct log_sink *older; /* every sink set, kept reachable */
} log_sink_t;

static void stderr_sink(void *arg, const keel_log_record_t *rec, const char *line, size_t len) {
  (void)arg;
  (void)rec;
  /* One write per line keeps lines from different threads whole. */
  while (len > 0) {
    ssize_t n = write(STDERR_FILENO, line, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    line += n;
    len -= (size_t)n;
  }
}

static log_sink_t sink_stderr = {stderr_sink, NULL, 0, NULL};
static _Atomic(log_sink_t *) sink_current = &sink_stderr;
static pthread_mutex_t sink_set_lock = PTHREAD_MUTEX_INITIALIZER;
static log_sink_t *sink_all; /* under sink_set_lock */
/* This thread is inside a sink: a line it logs goes straight to stderr. */
static _Thread_local bool in_sink;

int keel_log_set_sink(keel_log_sink_fn fn, void *arg) {
  if (in_sink)
    return -EDEADLK; /* it would wait for its own call to return */
  log_sink_t *sink = &sink_stderr;
  if (fn) {
    sink = calloc(1, sizeof *sink);
    if (!sink)
      return -ENOMEM;
    sink->fn = fn;
    sink->arg = arg;
  }
  pthread_mutex_lock(&sink_set_lock);
  if (sink != &sink_stderr) {
    sink->older = sink_all;
    sink_all = sink;
  }
  log_sink_t *old = atomic_exchange(&sink_current, sink);
  while (old != sink && atomic_load(&old->calls) > 0)
    sched_yield();
  pthread_mutex_unlock(&sink_set_lock);
  return 0;
}

static void sink_write(const keel_log_record_t *rec, const char *line, size_t len) {
  if (in_sink) {
    stderr_sink(NULL, rec, line, len);
    return;
  }
  log_sink_t *sink;
  for (;;) {
    sink = atomic_load(&sink_current);
    atomic_fetch_add(&sink->calls, 1);
    if (atomic_load(&sink_current) == sink)
      break;
    atomic_fetch_sub(&sink->calls, 1); /* replaced meanwhile: its setter may be done */
  }
  in_sink = true;
  sink->fn(sink->arg, rec, line, len);
  in_sink = false;
  atomic_fetch_sub_explicit(&sink->calls, 1, memory_order_release);
}

/* ---- Lines -------------------------------------------------------------- */

static int64_t clock_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * KEEL_NS_PER_SEC + ts.tv_nsec;
}

static void log_write(const keel_log_record_t *rec, bool truncated) {
  char line[KEEL_LOG_LINE_MAX];
  size_t len = keel__log_format(line, sizeof line, log_format_now(), rec, truncated);
  sink_write(rec, line, len);
}

/* The line that reports a count of dropped lines: it belongs to no worker
 * or task in particular. */
static void write_summary(const keel__log_summary_t *summary) {
  keel_log_field_t fields[] = {keel_log_str("line", summary->msg),
                               keel_log_uint("suppressed", summary->suppressed)};
  keel_log_record_t rec = {.level = summary->level,
                           .time_ns = clock_ns(CLOCK_REALTIME),
                           .worker = -1,
                           .msg = "suppressed identical lines",
                           .fields = fields,
                           .nfields = 2};
  log_write(&rec, false);
}

/* A line past the level: through the rate limit to the sink. The rate
 * limit's windows are real (monotonic) time even in lab mode: a flood of
 * lines is a matter of the process's output, not of virtual time. */
static void log_emit(keel_log_level_t level, const char *msg, const keel_log_field_t *fields,
                     size_t nfields, bool truncated) {
  int saved_errno = errno; /* so that a caller may log and then return -errno */
  int64_t now_ns = clock_ns(CLOCK_MONOTONIC);
  if (KEEL__UNLIKELY(keel__log_rate_due(now_ns)))
    keel__log_rate_collect(now_ns, false, write_summary);
  keel__log_summary_t report;
  bool admit = keel__log_rate_admit(level, msg, fields, nfields, now_ns, &report);
  if (report.suppressed)
    write_summary(&report);
  if (admit) {
    keel__worker_t *w = keel__tls_worker;
    keel_log_record_t rec = {.level = level,
                             .time_ns = clock_ns(CLOCK_REALTIME),
                             .worker = w ? w->id : -1,
                             .task = w && w->current ? w->current->name : NULL,
                             .msg = msg,
                             .fields = fields,
                             .nfields = nfields};
    log_write(&rec, truncated);
  }
  errno = saved_errno;
}

void keel_log_fields(keel_log_level_t level, const char *msg, const keel_log_field_t *fields,
                     size_t nfields) {
  if ((int)level < log_threshold())
    return;
  log_emit(level, msg ? msg : "", fields, fields ? nfields : 0, false);
}

void keel_log(keel_log_level_t level, const char *fmt, ...) {
  if ((int)level < log_threshold())
    return;
  char msg[KEEL_LOG_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    msg[0] = '\0';
  else if (n >= (int)sizeof msg) /* cut as a long string is: between characters */
    msg[keel__utf8_cut(msg, sizeof msg - 1)] = '\0';
  log_emit(level, msg, NULL, 0, n >= (int)sizeof msg);
}

int keel_log_flush(void) {
  int saved_errno = errno;
  int n = keel__log_rate_collect(clock_ns(CLOCK_MONOTONIC), true, write_summary);
  errno = saved_errno;
  return n;
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
