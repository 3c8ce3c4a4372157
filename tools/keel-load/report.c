/* keel-load's summary: one text line (plus one for the server), or one
 * JSON object, on stdout. */
#include <stdio.h>

#include "load.h"

static const double quantiles[] = {0.50, 0.90, 0.99, 0.999};
static const char *const quantile_names[] = {"p50", "p90", "p99", "p999"};
#define NQUANTILES (sizeof quantiles / sizeof quantiles[0])

static double seconds(int64_t ns) { return (double)ns / 1e9; }

static double per_second(uint64_t n, int64_t ns) { return ns > 0 ? (double)n / seconds(ns) : 0.0; }

/* A latency with a unit that keeps three significant digits readable. */
static void print_latency(FILE *out, uint64_t ns) {
  if (ns < 1000)
    fprintf(out, "%llu ns", (unsigned long long)ns);
  else if (ns < 1000000)
    fprintf(out, "%.1f us", (double)ns / 1e3);
  else if (ns < 1000000000)
    fprintf(out, "%.2f ms", (double)ns / 1e6);
  else
    fprintf(out, "%.2f s", (double)ns / 1e9);
}

static double server_us_per_msg(const load_result_t *r) {
  return r->messages ? r->server_cpu_s * 1e6 / (double)r->messages : 0.0;
}

static void report_text(const load_t *l, const load_result_t *r) {
  const load_opts_t *o = &l->opts;
  char addr[KEEL_ADDRSTRLEN];
  printf("%s %s conns %ld", l->mode->name, keel_addr_format(&l->addr, addr, sizeof addr), o->conns);
  if (o->interval_ns > 0)
    printf(" conn-rate %g/s", 1e9 / (double)o->interval_ns);
  l->mode->describe(l, stdout, false);
  printf(": %llu msgs in %.2f s = %.0f msgs/s, %.1f MB/s; latency", (unsigned long long)r->messages,
         seconds(r->duration_ns), per_second(r->messages, r->duration_ns),
         per_second(r->bytes, r->duration_ns) / 1e6);
  for (size_t i = 0; i < NQUANTILES; i++) {
    printf(" %s ", quantile_names[i]);
    print_latency(stdout, hist_quantile(&r->hist, quantiles[i]));
  }
  printf(" max ");
  print_latency(stdout, r->hist.count ? r->hist.max_ns : 0);
  printf("; errors %llu mismatches %llu; completed %llu in all, %llu unanswered at the end",
         (unsigned long long)r->errors, (unsigned long long)r->mismatches,
         (unsigned long long)r->completed, (unsigned long long)r->unanswered);
  if (r->reconnects > 0)
    printf("; %llu reconnects", (unsigned long long)r->reconnects);
  if (r->established < (uint64_t)o->conns)
    printf("; established %llu of %ld (connect errors %llu)", (unsigned long long)r->established,
           o->conns, (unsigned long long)r->connect_errors);
  printf("\n");
  if (r->server)
    printf("server pid %ld: cpu %.2f s = %.2f us/msg, rss %llu KiB\n", (long)o->server_pid,
           r->server_cpu_s, server_us_per_msg(r), (unsigned long long)r->server_rss_kib);
}

/* Writes s as a JSON string (the host is the only free-form text). */
static void json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      fprintf(out, "\\%c", ch);
    else if (ch < 0x20)
      fprintf(out, "\\u%04x", ch);
    else
      fputc(ch, out);
  }
  fputc('"', out);
}

static void json_latency(const load_result_t *r) {
  printf("\"latency_us\":{\"min\":%.3f,", (double)(r->hist.count ? r->hist.min_ns : 0) / 1e3);
  for (size_t i = 0; i < NQUANTILES; i++)
    printf("\"%s\":%.3f,", quantile_names[i], (double)hist_quantile(&r->hist, quantiles[i]) / 1e3);
  printf("\"max\":%.3f,\"mean\":%.3f},", (double)(r->hist.count ? r->hist.max_ns : 0) / 1e3,
         hist_mean(&r->hist) / 1e3);
}

static void report_json(const load_t *l, const load_result_t *r) {
  const load_opts_t *o = &l->opts;
  printf("{\"mode\":");
  json_string(stdout, l->mode->name);
  printf(",\"host\":");
  json_string(stdout, o->host);
  printf(",\"port\":%ld,\"conns\":%ld,\"conns_established\":%llu,", o->port, o->conns,
         (unsigned long long)r->established);
  l->mode->describe(l, stdout, true);
  printf("\"conn_rate\":%g,", o->interval_ns > 0 ? 1e9 / (double)o->interval_ns : 0.0);
  printf("\"workers\":%d,\"backend\":", o->workers);
  json_string(stdout, r->backend);
  printf(",\"warmup_s\":%.3f,\"duration_s\":%.3f,", seconds(o->warmup_ns), seconds(r->duration_ns));
  printf("\"messages\":%llu,\"msgs_per_s\":%.1f,\"bytes_per_s\":%.1f,",
         (unsigned long long)r->messages, per_second(r->messages, r->duration_ns),
         per_second(r->bytes, r->duration_ns));
  json_latency(r);
  printf("\"errors\":%llu,\"connect_errors\":%llu,\"mismatches\":%llu,",
         (unsigned long long)r->errors, (unsigned long long)r->connect_errors,
         (unsigned long long)r->mismatches);
  printf("\"messages_total\":%llu,\"unanswered\":%llu,\"reconnects\":%llu",
         (unsigned long long)r->completed, (unsigned long long)r->unanswered,
         (unsigned long long)r->reconnects);
  if (r->server)
    printf(",\"server_cpu_s\":%.3f,\"server_cpu_us_per_msg\":%.3f,\"server_rss_kib\":%llu",
           r->server_cpu_s, server_us_per_msg(r), (unsigned long long)r->server_rss_kib);
  printf("}\n");
}

void load_report(const load_t *l, const load_result_t *r) {
  if (l->opts.json)
    report_json(l, r);
  else
    report_text(l, r);
  fflush(stdout);
}
