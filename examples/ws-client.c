/* ws-client: keel's reconnecting WebSocket client (keel/wsc.h) on the
 * JSON feed protocol of ws-feed-server.
 *
 *   ws-client --url URL [--token T] [--subscribe a,b] [--requests N]
 *             [--concurrency C] [--duration S] [--json]
 *             [--max-attempts N] [--backoff-max-ms MS] [--backend auto|uring|epoll]
 *
 * Authenticates with --token, subscribes to the topics (again after every
 * reconnect, from the last sequence number seen plus one, so the server
 * replays what was missed), and keeps C `echo` requests in flight (ids
 * unique for the whole run) for S seconds (default 5) or N requests.
 *
 * Without --json it prints the events as they happen (connected epoch N,
 * disconnected and why, resubscribed topics) and one summary line at the
 * end. With --json it writes JSON lines to stdout, one per resolved
 * request ({"id":17,"epoch":3,"outcome":"ok"} or ...,"outcome":"failed",
 * "reason":"disconnected"}) and one per event ({"event":NAME,"epoch":E,
 * "t":UNIX_SECONDS,...} with NAME connect, disconnect, auth, send, sub,
 * unsub, update; an update's or a connect's epoch is the connection it came
 * on, however late its line is printed), and the summary to stderr. The
 * summary counts per topic the updates taken, the ones missed (gaps) and the
 * ones that came again (dups: no event line).
 *
 * Exit status 0, unless a request was never resolved (every request must
 * end: answered, or failed with a reason) or the run could not start. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "feed-proto.h"
#include "keel/keel.h"

#define MAX_TOPICS 16

typedef struct topic_stat {
  char name[65];
  uint64_t updates, gaps, dups, last;
  bool seen;
} topic_stat_t;

typedef struct app {
  const char *url, *token;
  char topics_arg[512];
  int ntopics;
  topic_stat_t topics[MAX_TOPICS];
  long requests; /* 0: no limit */
  int concurrency;
  double duration;
  bool json;
  unsigned max_attempts;
  int64_t backoff_max_ms;
  keel_backend_t backend;
  keel_wsc_t *c;
  feed_reader_t feed; /* the protocol's state (the owner task's) */
  uint64_t next_id;   /* shared by the request tasks (one worker) */
  long issued, ok, failed_disc, failed_timeout, failed_other, failed_error, resolved;
  long reconnects;
  int64_t end_ns;
  bool stop;
} app_t;

static double unix_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void event_vline(app_t *a, uint64_t epoch, const char *name, const char *fmt, va_list ap) {
  if (!a->json)
    return;
  printf("{\"event\":\"%s\",\"epoch\":%llu,\"t\":%.6f", name, (unsigned long long)epoch,
         unix_now());
  if (fmt)
    vprintf(fmt, ap);
  printf("}\n");
}

/* An event of the connection the client is on now (the owner's callbacks,
 * the requests). */
static void event_line(app_t *a, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void event_line(app_t *a, const char *name, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  event_vline(a, a->c ? keel_wsc_epoch(a->c) : 0, name, fmt, ap);
  va_end(ap);
}

/* An event of a given connection: an update or a connect is printed by its
 * own task, maybe after the client has moved on to the next connection. */
static void event_line_of(app_t *a, uint64_t epoch, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void event_line_of(app_t *a, uint64_t epoch, const char *name, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  event_vline(a, epoch, name, fmt, ap);
  va_end(ap);
}

/* ---- The protocol ------------------------------------------------------------------ */

/* Appends text (which it frees) to the message being built: 1, or a
 * negative errno. */
static int out_text(keel_wsc_out_t *o, char *text) {
  int rc = text ? keel_wsc_out_append(o, text, strlen(text)) : -ENOMEM;
  cJSON_free(text);
  return rc < 0 ? rc : 1;
}

static int p_auth(void *ctx, keel_wsc_out_t *o) {
  app_t *a = ctx;
  return a->token ? out_text(o, feed_auth(a->token)) : 0;
}

static int p_sub(void *ctx, const char *topic, const uint64_t *from, keel_wsc_out_t *o) {
  app_t *a = ctx;
  int rc = out_text(o, feed_sub(topic, from));
  if (from)
    event_line(a, "sub", ",\"topic\":\"%s\",\"from\":%llu", topic, (unsigned long long)*from);
  else
    event_line(a, "sub", ",\"topic\":\"%s\",\"from\":null", topic);
  if (!a->json && from)
    printf("subscribe %s from %llu\n", topic, (unsigned long long)*from);
  else if (!a->json)
    printf("subscribe %s\n", topic);
  return rc;
}

static int p_unsub(void *ctx, const char *topic, keel_wsc_out_t *o) {
  app_t *a = ctx;
  event_line(a, "unsub", ",\"topic\":\"%s\"", topic);
  return out_text(o, feed_unsub(topic));
}

static int p_classify(void *ctx, int opcode, const void *data, size_t len, keel_wsc_msg_t *m) {
  app_t *a = ctx;
  (void)opcode;
  int rc = feed_classify(&a->feed, data, len, m);
  if (rc == 0 && m->kind == KEEL_WSC_AUTH_OK)
    event_line(a, "auth", ",\"conn\":%ld", a->feed.conn);
  return rc;
}

/* ---- Tasks --------------------------------------------------------------------------- */

static const char *reason_of(int rc) {
  switch (rc) {
  case -ECONNRESET:
    return "disconnected";
  case -ETIMEDOUT:
    return "timeout";
  case -ESHUTDOWN:
    return "shutdown";
  case -EREMOTEIO:
    return "error";
  default:
    return keel_strerror(rc);
  }
}

static int requester(void *arg) {
  app_t *a = arg;
  char msg[128], resp[256];
  while (!a->stop && keel_now_ns() < a->end_ns && (a->requests == 0 || a->issued < a->requests)) {
    uint64_t id = ++a->next_id;
    a->issued++;
    int n = snprintf(msg, sizeof msg,
                     "{\"id\":%llu,\"op\":\"req\",\"method\":\"echo\",\"params\":{\"n\":%llu}}",
                     (unsigned long long)id, (unsigned long long)id);
    event_line(a, "send", ",\"id\":%llu", (unsigned long long)id);
    keel_wsc_req_t r = {
        .id = id, .data = msg, .len = (size_t)n, .resp = resp, .resp_cap = sizeof resp};
    int rc = keel_wsc_request(a->c, &r);
    a->resolved++;
    if (rc == 0)
      a->ok++;
    else if (rc == -ECONNRESET)
      a->failed_disc++;
    else if (rc == -ETIMEDOUT)
      a->failed_timeout++;
    else if (rc == -EREMOTEIO)
      a->failed_error++;
    else
      a->failed_other++;
    if (a->json) {
      if (rc == 0)
        printf("{\"id\":%llu,\"epoch\":%llu,\"outcome\":\"ok\"}\n", (unsigned long long)id,
               (unsigned long long)r.epoch);
      else
        printf("{\"id\":%llu,\"epoch\":%llu,\"outcome\":\"failed\",\"reason\":\"%s\"}\n",
               (unsigned long long)id, (unsigned long long)r.epoch, reason_of(rc));
    }
    if (rc == -ESHUTDOWN || rc == -ECANCELED)
      break;
  }
  return 0;
}

typedef struct sub_task {
  app_t *a;
  topic_stat_t *t;
  keel_wsc_sub_t *s;
} sub_task_t;

static int subscriber(void *arg) {
  sub_task_t *st = arg;
  app_t *a = st->a;
  topic_stat_t *t = st->t;
  char buf[4096];
  keel_wsc_update_t u;
  ssize_t n;
  while ((n = keel_wsc_sub_recv(st->s, buf, sizeof buf, &u)) >= 0 || n == -EMSGSIZE) {
    if (!u.has_seq)
      continue;
    if (t->seen && u.seq <= t->last) {
      t->dups++;
      continue;
    }
    if (t->seen && u.seq > t->last + 1)
      t->gaps += u.seq - t->last - 1;
    t->seen = true;
    t->last = u.seq;
    t->updates++;
    event_line_of(a, u.epoch, "update", ",\"topic\":\"%s\",\"seq\":%llu", t->name,
                  (unsigned long long)u.seq);
  }
  keel_wsc_sub_release(st->s);
  return 0;
}

static const char *delay_text(int64_t ms) {
  static char buf[64];
  if (ms < 0)
    return "no next attempt";
  snprintf(buf, sizeof buf, "next attempt in %lld ms", (long long)ms);
  return buf;
}

static int watcher(void *arg) {
  app_t *a = arg;
  keel_wsc_event_t ev;
  while (keel_wsc_event(a->c, &ev) == 0) {
    switch (ev.type) {
    case KEEL_WSC_EV_CONNECTED:
      if (ev.epoch > 1)
        a->reconnects++;
      if (a->json)
        event_line_of(a, ev.epoch, "connect", ",\"conn\":%ld", a->feed.conn);
      else
        printf("connected epoch %llu (server connection %ld)\n", (unsigned long long)ev.epoch,
               a->feed.conn);
      break;
    case KEEL_WSC_EV_DISCONNECTED:
    case KEEL_WSC_EV_CONNECT_FAILED:
      if (a->json)
        printf("{\"event\":\"disconnect\",\"epoch\":%llu,\"t\":%.6f,\"reason\":\"%s\",\"delay_ms\":"
               "%lld}\n",
               (unsigned long long)ev.epoch, unix_now(), ev.reason, (long long)ev.delay_ms);
      else
        printf("%s epoch %llu: %s (%s)\n",
               ev.type == KEEL_WSC_EV_DISCONNECTED ? "disconnected" : "connect failed",
               (unsigned long long)ev.epoch, ev.reason, delay_text(ev.delay_ms));
      break;
    case KEEL_WSC_EV_GAVE_UP:
      fprintf(stderr, "ws-client: gave up: %s\n", ev.reason);
      a->stop = true;
      break;
    case KEEL_WSC_EV_MESSAGE:
      free(ev.data);
      break;
    default:
      break;
    }
    if (ev.type == KEEL_WSC_EV_CLOSED)
      break;
  }
  return 0;
}

static int run(void *arg) {
  app_t *a = arg;
  keel_wsc_opts_t o = {.url = a->url,
                       .events = true,
                       .max_attempts = a->max_attempts,
                       .backoff_max_ms = a->backoff_max_ms,
                       .backoff_initial_ms = 100,
                       .request_timeout_ms = 5000,
                       .sub_capacity = 4096};
  keel_wsc_proto_t p = {
      .ctx = a, .auth = p_auth, .subscribe = p_sub, .unsubscribe = p_unsub, .classify = p_classify};
  keel_scope_t *all, *reqs;
  if (keel_scope_open(NULL, &all) < 0)
    return -ENOMEM;
  int rc = keel_wsc_open(all, &o, &p, &a->c);
  if (rc < 0) {
    fprintf(stderr, "ws-client: %s: %s\n", a->url, keel_strerror(rc));
    keel_scope_close(all);
    return rc;
  }
  a->end_ns = keel_now_ns() + (int64_t)(a->duration * 1e9);
  keel_spawn(all, watcher, a, &(keel_spawn_opts_t){.name = "events"});
  sub_task_t subs[MAX_TOPICS];
  for (int i = 0; i < a->ntopics; i++) {
    subs[i] = (sub_task_t){a, &a->topics[i], NULL};
    if (keel_wsc_subscribe(a->c, a->topics[i].name, &subs[i].s) == 0)
      keel_spawn(all, subscriber, &subs[i], &(keel_spawn_opts_t){.name = "topic"});
  }
  if (keel_scope_open(NULL, &reqs) == 0) {
    for (int i = 0; i < a->concurrency; i++)
      keel_spawn(reqs, requester, a, &(keel_spawn_opts_t){.name = "requests"});
    keel_scope_join(reqs);
    keel_scope_close(reqs);
  }
  keel_wsc_close(a->c); /* the owner ends: the watcher and topic tasks see it */
  keel_scope_join(all);
  keel_wsc_release(a->c);
  keel_scope_close(all);
  feed_reader_free(&a->feed);
  return 0;
}

static void usage(FILE *f) {
  fprintf(f, "usage: ws-client --url URL [--token T] [--subscribe a,b] [--requests N]\n"
             "                 [--concurrency C] [--duration S] [--json] [--max-attempts N]\n"
             "                 [--backoff-max-ms MS] [--backend auto|uring|epoll]\n");
}

int main(int argc, char **argv) {
  static app_t a = {.concurrency = 4, .duration = 5, .backoff_max_ms = 2000};
  static const struct option opts[] = {{"url", required_argument, NULL, 'u'},
                                       {"token", required_argument, NULL, 't'},
                                       {"subscribe", required_argument, NULL, 's'},
                                       {"requests", required_argument, NULL, 'n'},
                                       {"concurrency", required_argument, NULL, 'c'},
                                       {"duration", required_argument, NULL, 'd'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"max-attempts", required_argument, NULL, 'm'},
                                       {"backoff-max-ms", required_argument, NULL, 'b'},
                                       {"backend", required_argument, NULL, 'B'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'u':
      a.url = optarg;
      break;
    case 't':
      a.token = optarg;
      break;
    case 's':
      snprintf(a.topics_arg, sizeof a.topics_arg, "%s", optarg);
      break;
    case 'n':
      a.requests = atol(optarg);
      break;
    case 'c':
      a.concurrency = atoi(optarg);
      break;
    case 'd':
      a.duration = atof(optarg);
      break;
    case 'j':
      a.json = true;
      break;
    case 'm':
      a.max_attempts = (unsigned)atoi(optarg);
      break;
    case 'b':
      a.backoff_max_ms = atol(optarg);
      break;
    case 'B':
      a.backend = strcmp(optarg, "uring") == 0   ? KEEL_BACKEND_URING
                  : strcmp(optarg, "epoll") == 0 ? KEEL_BACKEND_EPOLL
                                                 : KEEL_BACKEND_AUTO;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 1;
    }
  }
  if (!a.url || a.concurrency < 0 || a.duration <= 0) {
    usage(stderr);
    return 1;
  }
  if (a.requests > 0 && a.duration == 5)
    a.duration = 3600; /* N requests, however long they take */
  for (char *save = NULL, *tok = strtok_r(a.topics_arg, ",", &save); tok && a.ntopics < MAX_TOPICS;
       tok = strtok_r(NULL, ",", &save))
    snprintf(a.topics[a.ntopics++].name, sizeof a.topics[0].name, "%s", tok);
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = 1;
  cfg.backend = a.backend;
  int rc = keel_run(&cfg, run, &a);
  fflush(stdout);
  if (rc < 0 && a.issued == 0) {
    fprintf(stderr, "ws-client: could not start: %s\n", keel_strerror(rc));
    return 1;
  }
  long never = a.issued - a.resolved;
  FILE *sum = a.json ? stderr : stdout;
  fprintf(sum,
          "summary: requests sent %ld ok %ld failed disconnected %ld timeout %ld error %ld other "
          "%ld never resolved %ld; reconnects %ld;",
          a.issued, a.ok, a.failed_disc, a.failed_timeout, a.failed_error, a.failed_other, never,
          a.reconnects);
  for (int i = 0; i < a.ntopics; i++)
    fprintf(sum, " topic %s updates %llu gaps %llu dups %llu", a.topics[i].name,
            (unsigned long long)a.topics[i].updates, (unsigned long long)a.topics[i].gaps,
            (unsigned long long)a.topics[i].dups);
  fprintf(sum, "\n");
  return never == 0 ? 0 : 2;
}
