/* keel-load's slow mode: slowloris. Each connection sends the start of a
 * request head one byte every --interval seconds and never its end
 * ("GET / HTTP/1.1\r\nHost: ...\r\nX-Slow: a", then "a" for ever: the head
 * stays far below any size limit), until the server answers or closes.
 * The answer must be a status line with --status (default 408, what a
 * header-read limit gives); anything else, or a close without an answer,
 * is a mismatch or an error.
 *
 * Each cut-off is recorded whole, in or out of the measured window: its
 * "latency" is the time from the start of the connect (the server's timer
 * starts at its accept, a little later) to the answer's first bytes, so
 * the report's latency figures are the distribution of cut-off times.
 * The connection is then opened again at once, so that --conns stay open,
 * until the window ends; with --linger the last ones are waited for, so
 * that every connection is cut off by the server rather than by the run's
 * end. --connect-rate spreads the first connects, and so their deadlines. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "load.h"

#define SLOW_MAX_ANSWER 64 /* enough of a status line to judge it */

typedef struct slow_cfg {
  int64_t interval_ns;
  long status;
  char text[400]; /* the head's start; its last byte repeats */
  size_t text_len;
} slow_cfg_t;

enum { OPT_INTERVAL = LOAD_MODE_OPT_BASE, OPT_STATUS };

static const struct option slow_options[] = {
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {"status", required_argument, NULL, OPT_STATUS},
    {NULL, 0, NULL, 0},
};

/* Counts a wrong answer (NUL-terminated) and quotes its first line. */
static int mismatch(load_conn_t *c, const char *what, const char *answer) {
  c->worker->mismatches++;
  load_complain(c->worker->load, c->id, "%s: %.*s", what, (int)strcspn(answer, "\r\n"), answer);
  return 1;
}

/* Is answer (got bytes, NUL-terminated) a status line with status? */
static bool has_status(const char *answer, size_t got, long status) {
  char code[8];
  snprintf(code, sizeof code, " %03ld", status);
  return got >= 13 && strncmp(answer, "HTTP/1.", 7) == 0 && memcmp(answer + 8, code, 4) == 0 &&
         (answer[12] == ' ' || answer[12] == '\r');
}

/* Waits for the server's answer, sending a byte whenever one is due.
 * Returns 0 when an answer with the expected status has come (recorded),
 * 1 after a wrong answer, or a negative errno (-EPIPE: closed without
 * one). */
static int one_connection(load_conn_t *c, const slow_cfg_t *cfg) {
  keel_stream_t *s = keel_tcp_stream(c->tcp);
  char answer[SLOW_MAX_ANSWER + 1];
  size_t got = 0, sent = 0;
  int64_t next_ns = keel_now_ns();
  for (;;) {
    if (keel_now_ns() >= next_ns) {
      size_t i = sent < cfg->text_len ? sent : cfg->text_len - 1;
      int rc = keel_write_all(s, cfg->text + i, 1, NULL);
      if (rc < 0)
        return rc;
      sent++;
      next_ns += cfg->interval_ns;
    }
    int64_t prev = keel_task_set_deadline(next_ns);
    ssize_t n = keel_read(s, answer + got, SLOW_MAX_ANSWER - got);
    keel_task_set_deadline(prev);
    if (n == -ETIMEDOUT)
      continue; /* the next byte is due */
    if (n <= 0)
      return n == 0 ? (got ? mismatch(c, "closed in the answer", answer) : -EPIPE) : (int)n;
    got += (size_t)n;
    answer[got] = '\0';
    if (got < 13 && !memchr(answer, '\n', got))
      continue;
    if (!has_status(answer, got, cfg->status))
      return mismatch(c, "not the expected status", answer);
    int64_t now = keel_now_ns();
    load_worker_t *w = c->worker;
    hist_record(&w->hist, (uint64_t)(now - c->connect_ns));
    w->messages++;
    w->completed++;
    w->bytes += sent;
    return 0;
  }
}

static int slow_run(load_conn_t *c) {
  const slow_cfg_t *cfg = c->worker->load->mode_cfg;
  load_t *l = c->worker->load;
  for (;;) {
    int rc = one_connection(c, cfg);
    if (rc == -ECANCELED)
      c->worker->unanswered++; /* the run ended it, not the server */
    if (rc != 0)
      return rc > 0 ? 0 : rc;
    if (atomic_load_explicit(&l->lingering, memory_order_relaxed) ||
        atomic_load_explicit(&l->stopping, memory_order_relaxed))
      return 0;
    rc = load_reconnect(c);
    if (rc < 0)
      return rc;
  }
}

static int slow_init(load_t *l) {
  slow_cfg_t *cfg = calloc(1, sizeof *cfg);
  if (cfg == NULL)
    return -ENOMEM;
  cfg->interval_ns = KEEL_NS_PER_SEC;
  cfg->status = 408;
  l->mode_cfg = cfg;
  return 0;
}

static int slow_parse_option(load_t *l, int id, const char *value) {
  slow_cfg_t *cfg = l->mode_cfg;
  if (id == OPT_STATUS)
    return load_parse_long(value, 100, 599, &cfg->status);
  if (id == OPT_INTERVAL) {
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno != 0 || end == value || *end != '\0' || !(v >= 0.001) || v > 3600)
      return -EINVAL;
    cfg->interval_ns = (int64_t)(v * 1e9);
    return 0;
  }
  return -EINVAL;
}

static int slow_prepare(load_t *l) {
  slow_cfg_t *cfg = l->mode_cfg;
  const char *host = l->opts.host;
  bool v6 = strchr(host, ':') != NULL;
  int n = snprintf(cfg->text, sizeof cfg->text,
                   v6 ? "GET / HTTP/1.1\r\nHost: [%s]:%ld\r\nX-Slow: a"
                      : "GET / HTTP/1.1\r\nHost: %s:%ld\r\nX-Slow: a",
                   host, l->opts.port);
  cfg->text_len = (size_t)n;
  return 0;
}

static void slow_describe(const load_t *l, FILE *out, bool json) {
  const slow_cfg_t *cfg = l->mode_cfg;
  if (json)
    fprintf(out, "\"interval_s\":%g,\"status\":%ld,", (double)cfg->interval_ns / 1e9, cfg->status);
  else
    fprintf(out, " a byte every %g s, answer %ld", (double)cfg->interval_ns / 1e9, cfg->status);
}

static void slow_destroy(load_t *l) {
  free(l->mode_cfg);
  l->mode_cfg = NULL;
}

const load_mode_t load_slow_mode = {
    .name = "slow",
    .summary = "slowloris: heads sent a byte at a time, never finished; time each cut-off",
    .usage = "  --interval S              seconds between two bytes (default 1)\n"
             "  --status N                the status the server must answer (default 408)\n",
    .options = slow_options,
    .init = slow_init,
    .parse_option = slow_parse_option,
    .prepare = slow_prepare,
    .run_conn = slow_run,
    .describe = slow_describe,
    .destroy = slow_destroy,
};
