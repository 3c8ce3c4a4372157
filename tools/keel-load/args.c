/* keel-load's command line: the mode first, then common and mode options. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "load.h"

enum {
  OPT_HOST = 256,
  OPT_PORT,
  OPT_CONNS,
  OPT_DURATION,
  OPT_WARMUP,
  OPT_WORKERS,
  OPT_BACKEND,
  OPT_CONNECT_CONCURRENCY,
  OPT_JSON,
  OPT_SERVER_PID,
  OPT_CONN_RATE,
  OPT_CONNECT_RATE,
  OPT_LINGER,
  OPT_HELP,
};

static const struct option common_options[] = {
    {"host", required_argument, NULL, OPT_HOST},
    {"port", required_argument, NULL, OPT_PORT},
    {"conns", required_argument, NULL, OPT_CONNS},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"backend", required_argument, NULL, OPT_BACKEND},
    {"connect-concurrency", required_argument, NULL, OPT_CONNECT_CONCURRENCY},
    {"json", no_argument, NULL, OPT_JSON},
    {"server-pid", required_argument, NULL, OPT_SERVER_PID},
    {"conn-rate", required_argument, NULL, OPT_CONN_RATE},
    {"connect-rate", required_argument, NULL, OPT_CONNECT_RATE},
    {"linger", required_argument, NULL, OPT_LINGER},
    {"help", no_argument, NULL, OPT_HELP},
};
#define COMMON_OPTS (sizeof common_options / sizeof common_options[0])

static const load_mode_t *const modes[] = {&load_echo_mode, &load_ws_mode, &load_http_mode,
                                           &load_slow_mode};
#define NMODES (sizeof modes / sizeof modes[0])

static void usage(FILE *out, const load_mode_t *only) {
  fprintf(out, "usage: keel-load MODE [options]\nmodes:\n");
  for (size_t i = 0; i < NMODES; i++)
    fprintf(out, "  %-8s %s\n", modes[i]->name, modes[i]->summary);
  fprintf(out,
          "common options:\n"
          "  --host H                  server address, numeric (default 127.0.0.1)\n"
          "  --port P                  server port (default 7000)\n"
          "  --conns N                 connections (default 100)\n"
          "  --duration S              measured seconds, fractions allowed (default 10)\n"
          "  --warmup S                seconds after connecting, before measuring (default 1)\n"
          "  --workers N               keel workers running connections (default 1)\n"
          "  --backend B               auto|uring|epoll (default auto)\n"
          "  --connect-concurrency N   connects in flight at most (default 256)\n"
          "  --json                    print one JSON object instead of the text summary\n"
          "  --server-pid PID          report that process's CPU time and RSS over the window\n"
          "  --conn-rate R             messages per second on each connection, latency timed\n"
          "                            from when each was due (http, ws; default: unpaced)\n"
          "  --connect-rate R          connects started per second, evenly (default: at once,\n"
          "                            --connect-concurrency at a time)\n"
          "  --linger S                after the window, wait up to S seconds for connections\n"
          "                            to end by themselves (slow: their last cut-offs)\n"
          "  --help                    this text\n");
  for (size_t i = 0; i < NMODES; i++)
    if (only == NULL || only == modes[i])
      fprintf(out, "%s options:\n%s", modes[i]->name, modes[i]->usage);
}

int load_parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
    return -EINVAL;
  *out = v;
  return 0;
}

/* Seconds, fractions allowed, at most a day; zero only if allow_zero. */
static int parse_seconds(const char *s, bool allow_zero, int64_t *out_ns) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= 0) || v > 86400)
    return -EINVAL;
  *out_ns = (int64_t)(v * 1e9);
  return *out_ns > 0 || allow_zero ? 0 : -EINVAL;
}

/* A rate per second (messages on one connection, connects), into the
 * interval between two: at least one a day, at most a million a second. */
static int parse_rate(const char *s, int64_t *interval_ns) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= 1.0 / 86400) || v > 1e6)
    return -EINVAL;
  *interval_ns = (int64_t)(1e9 / v);
  return 0;
}

static int parse_backend(const char *s, keel_backend_t *out) {
  if (strcmp(s, "auto") == 0)
    *out = KEEL_BACKEND_AUTO;
  else if (strcmp(s, "uring") == 0 || strcmp(s, "io_uring") == 0)
    *out = KEEL_BACKEND_URING;
  else if (strcmp(s, "epoll") == 0)
    *out = KEEL_BACKEND_EPOLL;
  else
    return -EINVAL;
  return 0;
}

static int apply_common(load_opts_t *o, int id, const char *val) {
  long v = 0;
  int rc = 0;
  switch (id) {
  case OPT_HOST:
    if (strlen(val) >= sizeof o->host)
      return -EINVAL;
    strcpy(o->host, val);
    return 0;
  case OPT_PORT:
    return load_parse_long(val, 1, 65535, &o->port);
  case OPT_CONNS:
    return load_parse_long(val, 1, 1000000, &o->conns);
  case OPT_DURATION:
    return parse_seconds(val, false, &o->duration_ns);
  case OPT_WARMUP:
    return parse_seconds(val, true, &o->warmup_ns);
  case OPT_WORKERS:
    rc = load_parse_long(val, 1, LOAD_MAX_WORKERS, &v);
    o->workers = (int)v;
    return rc;
  case OPT_BACKEND:
    return parse_backend(val, &o->backend);
  case OPT_JSON:
    o->json = true;
    return 0;
  case OPT_CONNECT_CONCURRENCY:
    return load_parse_long(val, 1, 1000000, &o->connect_concurrency);
  case OPT_SERVER_PID:
    rc = load_parse_long(val, 1, 0x7fffffff, &v);
    o->server_pid = (pid_t)v;
    return rc;
  case OPT_CONN_RATE:
    return parse_rate(val, &o->interval_ns);
  case OPT_CONNECT_RATE:
    return parse_rate(val, &o->connect_gap_ns);
  case OPT_LINGER:
    return parse_seconds(val, true, &o->linger_ns);
  default:
    return -EINVAL;
  }
}

/* The address to connect to, from --host and --port. */
static int resolve(load_t *l) {
  char hostport[300];
  const char *host = l->opts.host;
  bool v6 = strchr(host, ':') != NULL && host[0] != '[';
  snprintf(hostport, sizeof hostport, v6 ? "[%s]:%ld" : "%s:%ld", host, l->opts.port);
  if (keel_addr_parse(hostport, &l->addr) < 0) {
    fprintf(stderr, "keel-load: --host wants a numeric address, not %s\n", host);
    return -EINVAL;
  }
  return 0;
}

/* getopt_long's table: the common options, then the mode's. */
static void build_options(const load_mode_t *m, struct option *out) {
  size_t n = 0;
  for (size_t i = 0; i < COMMON_OPTS; i++)
    out[n++] = common_options[i];
  for (const struct option *o = m->options; o->name != NULL && n < COMMON_OPTS + LOAD_MODE_OPTS_MAX;
       o++)
    out[n++] = *o;
  out[n] = (struct option){NULL, 0, NULL, 0};
}

static const load_mode_t *find_mode(const char *name) {
  for (size_t i = 0; i < NMODES; i++)
    if (strcmp(modes[i]->name, name) == 0)
      return modes[i];
  return NULL;
}

/* Runs getopt over the options after the mode. 0, 1 (--help) or 2. */
static int parse_options(load_t *l, int argc, char **argv) {
  struct option table[COMMON_OPTS + LOAD_MODE_OPTS_MAX + 1];
  build_options(l->mode, table);
  opterr = 0; /* our messages name the option and the tool */
  optind = 1;
  int id, idx = -1;
  while ((id = getopt_long(argc, argv, "", table, &idx)) != -1) {
    if (id == OPT_HELP) {
      usage(stdout, l->mode);
      return 1;
    }
    if (id == '?' || id == ':') {
      fprintf(stderr, "keel-load: bad option or missing value: %s\n", argv[optind - 1]);
      return 2;
    }
    int rc = id >= LOAD_MODE_OPT_BASE ? l->mode->parse_option(l, id, optarg)
                                      : apply_common(&l->opts, id, optarg);
    if (rc < 0) {
      fprintf(stderr, "keel-load: bad value for --%s: %s\n", table[idx].name, optarg);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "keel-load: unexpected argument: %s\n", argv[optind]);
    return 2;
  }
  if (l->opts.interval_ns > 0 && !l->mode->paced) {
    fprintf(stderr, "keel-load: --conn-rate is not for mode %s\n", l->mode->name);
    return 2;
  }
  return 0;
}

int load_parse_args(load_t *l, int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout, NULL);
    return argc < 2 ? 2 : 1;
  }
  l->mode = find_mode(argv[1]);
  if (l->mode == NULL) {
    fprintf(stderr, "keel-load: unknown mode %s\n", argv[1]);
    usage(stderr, NULL);
    return 2;
  }
  if (l->mode->init(l) < 0) {
    fprintf(stderr, "keel-load: out of memory\n");
    return 2;
  }
  int rc = parse_options(l, argc - 1, argv + 1);
  if (rc == 0 && resolve(l) < 0)
    rc = 2;
  if (rc == 2)
    usage(stderr, l->mode);
  return rc;
}
