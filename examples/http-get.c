/* http-get: fetches a URL with keel's HTTP client, like a minimal curl.
 *
 *   http-get URL [-X METHOD] [-I] [-H 'Name: value']... [-d BODY] [-o FILE]
 *            [--repeat N] [--backend auto|uring|epoll]
 *            [--bench N] [--duration S] [--conns C]
 *            [--cacert F] [--insecure] [--cert F --key F] [--resolve HOST:PORT:ADDR]...
 *
 * https:// URLs verify the server against OpenSSL's default CA paths, or
 * --cacert F; --insecure verifies nothing; --cert/--key send a client
 * certificate; --resolve connects to ADDR for HOST:PORT (the name is still
 * sent and verified), as curl's does. A TLS failure prints its reason
 * ("certificate has expired", "hostname mismatch", ...) and exits 1.
 *
 * Prints the status line, the header fields and the body of the response
 * (-I: a HEAD request; -o: the body goes to FILE). With --repeat N it
 * makes the request N times through one pool and says on stderr whether
 * each went over a connection used before. With --bench N it makes N GET
 * requests from C tasks on one worker (C connections at most), reads every
 * body and prints requests/s and the process's CPU time per request
 * (getrusage: user + system), as
 *   requests: N  errors: E  non_2xx: K  body_bytes: B  reused: R  seconds: S
 *   req/s: X  cpu_us_per_req: Y
 * on one line (B: the bodies' bytes, all responses together). --duration S
 * stops it after S seconds (without --bench: only then). Exits 0 when every
 * request got a response (any status), 1 otherwise. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "keel/keel.h"

#define MAX_FIELDS 32
#define MAX_RESOLVE 8

typedef struct app {
  keel_http_call_opts_t req;
  keel_http_header_t fields[MAX_FIELDS];
  char *field_copies[MAX_FIELDS];
  long repeat, bench, conns;
  double duration; /* --duration: seconds, 0: none */
  keel_backend_t backend;
  keel_http_client_t *client;
  /* TLS */
  const char *cacert, *cert, *key;
  bool insecure;
  const char *resolve[MAX_RESOLVE + 1];
  int nresolve;
  keel_tls_ctx_t *tls;
  char why[KEEL_TLS_REASON_MAX];
  FILE *out; /* the body */
  /* --bench */
  long next, done, errors, reused, non_2xx;
  long long body_bytes;
  int64_t stop_ns; /* --duration: no request starts after this; 0: none */
  int first_error;
} app_t;

/* ---- One request, printed ------------------------------------------------- */

static void print_head(const keel_http_call_t *call) {
  printf("HTTP/1.%d %d %s\r\n", keel_http_call_version(call) == 10 ? 0 : 1,
         keel_http_call_status(call), keel_http_call_reason(call));
  for (size_t i = 0; i < keel_http_call_header_count(call); i++) {
    const keel_http_header_t *h = keel_http_call_header_at(call, i);
    printf("%s: %s\r\n", h->name, h->value);
  }
  printf("\r\n");
}

static int get_once(app_t *app, long i) {
  keel_http_call_t *call;
  app->why[0] = '\0';
  int rc = keel_http_call_open(app->client, &app->req, &call);
  if (rc < 0) {
    fprintf(stderr, "http-get: %s: %s%s%s\n", app->req.url, keel_strerror(rc),
            app->why[0] ? ": " : "", app->why);
    return rc;
  }
  if (app->repeat > 1)
    fprintf(stderr, "http-get: request %ld: %s connection%s\n", i + 1,
            keel_http_call_reused(call) ? "reused" : "new",
            keel_http_call_retried(call) ? " (sent again after a stale one)" : "");
  print_head(call);
  char buf[16384];
  ssize_t n;
  while ((n = keel_http_call_read(call, buf, sizeof buf)) > 0)
    fwrite(buf, 1, (size_t)n, app->out);
  fflush(stdout);
  fflush(app->out);
  keel_http_call_close(call);
  if (n < 0)
    fprintf(stderr, "http-get: reading the body: %s\n", keel_strerror((int)n));
  return n < 0 ? (int)n : 0;
}

/* ---- --bench ------------------------------------------------------------ */

static int bench_task(void *arg) {
  app_t *app = arg;
  while (app->next < app->bench && (app->stop_ns == 0 || keel_now_ns() < app->stop_ns)) {
    app->next++;
    keel_http_call_t *call;
    int rc = keel_http_fetch(app->client, &app->req, &call);
    if (rc == 0) {
      const void *body;
      size_t len;
      int status = keel_http_call_status(call);
      app->non_2xx += status < 200 || status > 299;
      if (keel_http_call_body(call, &body, &len) == 0)
        app->body_bytes += (long long)len;
      app->reused += keel_http_call_reused(call);
      keel_http_call_close(call);
    } else {
      if (app->errors++ == 0)
        app->first_error = rc;
    }
    app->done++;
  }
  return 0;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int bench(app_t *app) {
  keel_scope_t *scope;
  int rc = keel_scope_open(NULL, &scope);
  if (rc < 0)
    return rc;
  int64_t t0 = keel_now_ns();
  double cpu0 = cpu_seconds();
  if (app->duration > 0)
    app->stop_ns = t0 + (int64_t)(app->duration * 1e9);
  for (long i = 0; i < app->conns && rc == 0; i++)
    rc = keel_spawn(scope, bench_task, app, &(keel_spawn_opts_t){.name = "bench"});
  keel_scope_close(scope);
  double secs = (double)(keel_now_ns() - t0) / 1e9, cpu = cpu_seconds() - cpu0;
  printf("requests: %ld  errors: %ld  non_2xx: %ld  body_bytes: %lld  reused: %ld  seconds: %.3f  "
         "req/s: %.0f  cpu_us_per_req: %.2f\n",
         app->done, app->errors, app->non_2xx, app->body_bytes, app->reused, secs,
         (double)app->done / secs, app->done ? cpu * 1e6 / (double)app->done : 0.0);
  fflush(stdout);
  if (app->errors)
    fprintf(stderr, "http-get: first error: %s%s%s\n", keel_strerror(app->first_error),
            app->why[0] ? ": " : "", app->why);
  return rc < 0 ? rc : app->errors ? -EIO : 0;
}

/* A client TLS context when an option asks for one; else the client's
 * default serves https. */
static int tls_open(app_t *app) {
  if (!app->cacert && !app->insecure && !app->cert)
    return 0;
  static const char *const alpn[] = {"http/1.1", NULL};
  keel_tls_ctx_opts_t o = {
      .ca_file = app->cacert,
      .insecure_no_verify = app->insecure,
      .cert = {.cert_file = app->cert, .key_file = app->key},
      .alpn = alpn,
  };
  int rc = keel_tls_ctx_open(&o, &app->tls, app->why, sizeof app->why);
  if (rc < 0)
    fprintf(stderr, "http-get: TLS: %s (%s)\n", app->why, keel_strerror(rc));
  return rc;
}

static int main_task(void *arg) {
  app_t *app = arg;
  int rc = tls_open(app);
  if (rc < 0)
    return rc;
  keel_http_client_opts_t co = {
      .max_conns_per_origin = (unsigned)app->conns,
      .tls = app->tls,
      .resolve = app->nresolve ? app->resolve : NULL,
  };
  rc = keel_http_client_open(&co, &app->client);
  if (rc < 0) {
    keel_tls_ctx_close(app->tls);
    return rc;
  }
  if (app->bench > 0) {
    rc = bench(app);
  } else {
    for (long i = 0; i < app->repeat && rc == 0; i++)
      rc = get_once(app, i);
  }
  keel_http_client_close(app->client);
  keel_tls_ctx_close(app->tls);
  return rc;
}

/* ---- Options -------------------------------------------------------------- */

static int add_field(app_t *app, const char *arg) {
  const char *colon = strchr(arg, ':');
  if (!colon || app->req.nheaders == MAX_FIELDS)
    return -1;
  size_t i = app->req.nheaders++;
  char *copy = strdup(arg);
  if (!copy)
    return -1;
  app->field_copies[i] = copy;
  copy[colon - arg] = '\0';
  const char *v = copy + (colon - arg) + 1;
  while (*v == ' ' || *v == '\t')
    v++;
  app->fields[i] = (keel_http_header_t){.name = copy, .value = v};
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: http-get URL [-X METHOD] [-I] [-H 'Name: value']... [-d BODY] [-o FILE]\n"
                  "                [--repeat N] [--backend auto|uring|epoll]\n"
                  "                [--bench N] [--duration S] [--conns C]\n"
                  "                [--cacert F] [--insecure] [--cert F --key F]\n"
                  "                [--resolve HOST:PORT:ADDR]...\n");
  exit(2);
}

static void parse_args(app_t *app, int argc, char **argv) {
  static const struct option longs[] = {
      {"repeat", required_argument, NULL, 'r'},   {"backend", required_argument, NULL, 'b'},
      {"bench", required_argument, NULL, 'n'},    {"conns", required_argument, NULL, 'c'},
      {"duration", required_argument, NULL, 's'}, {"cacert", required_argument, NULL, 'A'},
      {"insecure", no_argument, NULL, 'k'},       {"cert", required_argument, NULL, 'E'},
      {"key", required_argument, NULL, 'K'},      {"resolve", required_argument, NULL, 'R'},
      {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "X:H:d:o:Ih", longs, NULL)) != -1) {
    switch (ch) {
    case 'X':
      app->req.method = optarg;
      break;
    case 'I':
      app->req.method = "HEAD";
      break;
    case 'H':
      if (add_field(app, optarg) < 0)
        usage();
      break;
    case 'd':
      app->req.body = optarg;
      app->req.body_len = strlen(optarg);
      if (!app->req.method)
        app->req.method = "POST";
      break;
    case 'o':
      app->out = fopen(optarg, "w");
      if (!app->out) {
        perror(optarg);
        exit(1);
      }
      break;
    case 'r':
      app->repeat = strtol(optarg, NULL, 10);
      break;
    case 'n':
      app->bench = strtol(optarg, NULL, 10);
      break;
    case 'c':
      app->conns = strtol(optarg, NULL, 10);
      break;
    case 's':
      app->duration = strtod(optarg, NULL);
      if (!(app->duration > 0))
        usage();
      break;
    case 'A':
      app->cacert = optarg;
      break;
    case 'k':
      app->insecure = true;
      break;
    case 'E':
      app->cert = optarg;
      break;
    case 'K':
      app->key = optarg;
      break;
    case 'R':
      if (app->nresolve == MAX_RESOLVE)
        usage();
      app->resolve[app->nresolve++] = optarg;
      break;
    case 'b':
      if (strcmp(optarg, "uring") == 0)
        app->backend = KEEL_BACKEND_URING;
      else if (strcmp(optarg, "epoll") == 0)
        app->backend = KEEL_BACKEND_EPOLL;
      else if (strcmp(optarg, "auto") != 0)
        usage();
      break;
    default:
      usage();
    }
  }
  if (optind != argc - 1 || app->repeat < 1 || app->conns < 1 || app->bench < 0 ||
      !app->cert != !app->key)
    usage();
  if (app->duration > 0 && app->bench == 0)
    app->bench = LONG_MAX; /* until the time is up */
  app->req.url = argv[optind];
  if (!app->out)
    app->out = stdout;
  app->req.headers = app->fields;
  app->req.why = app->why;
  app->req.why_len = sizeof app->why;
}

int main(int argc, char **argv) {
  app_t app = {.repeat = 1, .conns = 1};
  parse_args(&app, argc, argv);
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = 1;
  cfg.backend = app.backend;
  cfg.handle_signals = true;
  int rc = keel_run(&cfg, main_task, &app);
  for (size_t i = 0; i < app.req.nheaders; i++)
    free(app.field_copies[i]);
  if (app.out != stdout)
    fclose(app.out);
  if (rc < 0 && rc != -EIO && app.bench == 0)
    return 1;
  if (rc < 0)
    fprintf(stderr, "http-get: %s\n", keel_strerror(rc));
  return rc < 0 ? 1 : 0;
}
