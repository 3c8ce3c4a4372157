/* ws-feed-server: a WebSocket feed of JSON text frames on keel, with cJSON.
 *
 *   ws-feed-server [--host H] [--port P] [--token T] [--topics a,b,c] [--rate N]
 *                  [--workers N] [--backend auto|uring|epoll]
 *                  [--chaos-drop-every MS] [--log FILE]
 *
 * The protocol, one JSON object per text frame (client -> server):
 *   {"op":"auth","token":T}       -> {"op":"auth","ok":true,"conn":N}, N the server's
 *                                    connection number (from 1, over its life), or
 *                                    {"op":"auth","ok":false,"error":"bad token"}
 *   {"op":"sub","topic":T[,"from":SEQ]}
 *                                 -> {"op":"sub","topic":T,"ok":true}, then the updates
 *                                    still kept from SEQ on (inclusive), then live ones
 *   {"op":"unsub","topic":T}      -> {"op":"unsub","topic":T,"ok":true}
 *   {"id":ID,"op":"req","method":M,"params":P}
 *                                 -> {"id":ID,"result":R} or {"id":ID,"error":E}
 * and the updates: {"op":"update","topic":T,"seq":N,"data":{"value":V}}, numbered
 * per topic from 1 over the server's life (so a client that reconnects resumes
 * with "from"), made --rate times a second per topic by one ticker task.
 * Before auth, sub/unsub answer ok:false and req an error, "not authenticated".
 * Methods: "echo" answers params; "sleep" answers params after params.ms
 * milliseconds (at most 60 s), in a task of its own, so later requests are
 * answered meanwhile. Anything that is not JSON closes with 1007; a binary
 * frame, with 1003.
 *
 * Slow clients: each topic keeps its last 1000 updates in one ring that
 * every connection reads. A connection only keeps, per topic, the number of
 * the next update it owes its client; its own task copies updates out of
 * the ring and sends them. The ticker never writes to a socket: it adds to the
 * ring and rings the alerts of the connections subscribed. So a slow client
 * costs no memory beyond its cursor and holds up nobody else; one that
 * falls more than 1000 updates behind on a topic, or takes more than 10 s
 * to take one message, is closed with 1008 "too slow" (a "drop" in the log).
 *
 * --chaos-drop-every MS shuts each connection's TCP (no close frame) after a
 * random time in [MS/2, 3MS/2]. --log FILE appends one JSON line per answered
 * request, {"conn":N,"id":ID,"method":M}, once its answer is written, and per
 * event, {"conn":N,"event":"open"|"auth"|"drop"|"close"}. Prints
 * `ws-feed-server listening on HOST:PORT` once listening; SIGINT/SIGTERM close
 * every WebSocket with 1001 and exit 0. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "feed-proto.h"
#include "keel/keel.h"

#define RING_SIZE 1000        /* updates kept per topic */
#define TOPIC_NAME_MAX 64     /* bytes of a topic's name */
#define MAX_TOPICS 64         /* --topics */
#define UPDATE_JSON_MAX 256   /* an update's text, with its topic's name */
#define MAX_SLEEPS 100        /* "sleep" requests pending per connection */
#define MAX_SLEEP_MS 60000    /* params.ms of "sleep" */
#define SEND_TIMEOUT_MS 10000 /* a client that takes no message for this long is too slow */
#define CLOSE_TIMEOUT_MS 2000 /* wait for the client's close frame */

typedef struct conn conn_t;

/* A connection's place in a topic: linked into the topic's list while
 * subscribed, so that the ticker rings the connection. */
typedef struct subscription {
  struct subscription *prev, *next;
  conn_t *conn;
  uint64_t next_seq; /* the next update owed to the client */
  bool linked;
} subscription_t;

typedef struct update {
  char json[UPDATE_JSON_MAX];
} update_t;

typedef struct topic {
  char name[TOPIC_NAME_MAX + 1];
  /* Guards what follows, across workers; held for a copy, never across a
   * wait. */
  keel_mutex_t lock;
  uint64_t last_seq;           /* 0 before the first update */
  update_t *ring;              /* update seq is ring[(seq - 1) % RING_SIZE] */
  subscription_t *subscribers; /* subscription_t.next */
} topic_t;

typedef struct app {
  char hostport[300];
  const char *token;
  topic_t *topics;
  size_t ntopics;
  long rate;
  int workers;
  keel_backend_t backend;
  int64_t chaos_ms; /* 0: no chaos */
  int log_fd;       /* -1: no log */
  atomic_uint_fast64_t conns;
  keel_ws_opts_t ws;
} app_t;

struct conn {
  app_t *app;
  keel_ws_t *ws;
  uint64_t number;
  keel_alert_t *alert; /* rung by the ticker, the chaos task, a failed sleeper */
  keel_scope_t *scope; /* the sleepers and the chaos task */
  bool authed;
  bool dropped;   /* by the server: too slow, or chaos */
  bool broken;    /* a sleeper could not send: the connection is done */
  int close_code; /* the close to send (0: one without a code) */
  const char *close_reason;
  int sleepers;
  subscription_t subs[]; /* one per topic, as app->topics */
};

/* ---- The log ---------------------------------------------------------------- */

/* One write per line to a file opened with O_APPEND: the lines of every
 * worker stay whole, and each is in the file once the call returns. */
static void log_text(const app_t *app, const char *text) {
  if (app->log_fd < 0 || !text)
    return;
  struct iovec iov[2] = {{(void *)text, strlen(text)}, {"\n", 1}};
  if (writev(app->log_fd, iov, 2) < 0)
    keel_log(KEEL_LOG_WARN, "ws-feed-server: log: %s", keel_strerror(-errno));
}

static void log_event(const conn_t *conn, const char *event) {
  if (conn->app->log_fd < 0)
    return;
  cJSON *line = cJSON_CreateObject();
  cJSON_AddNumberToObject(line, "conn", (double)conn->number);
  cJSON_AddStringToObject(line, "event", event);
  char *text = cJSON_PrintUnformatted(line);
  log_text(conn->app, text);
  cJSON_free(text);
  cJSON_Delete(line);
}

/* The line of an answered request, made before the answer is sent (a
 * sleeper writes it later); NULL without a log. */
static char *request_line(const conn_t *conn, const cJSON *id, const char *method) {
  if (conn->app->log_fd < 0)
    return NULL;
  cJSON *line = cJSON_CreateObject();
  cJSON_AddNumberToObject(line, "conn", (double)conn->number);
  cJSON_AddItemToObject(line, "id", id ? cJSON_Duplicate(id, true) : cJSON_CreateNull());
  cJSON_AddItemToObject(line, "method", method ? cJSON_CreateString(method) : cJSON_CreateNull());
  char *text = cJSON_PrintUnformatted(line);
  cJSON_Delete(line);
  return text;
}

/* ---- Topics ------------------------------------------------------------------- */

static uint64_t topic_oldest(const topic_t *t) {
  return t->last_seq > RING_SIZE ? t->last_seq - RING_SIZE + 1 : 1;
}

static bool format_update(const topic_t *t, uint64_t seq, char *out) {
  return feed_update(t->name, seq, (double)keel_random_below(1000), out, UPDATE_JSON_MAX);
}

/* Adds the next update and rings every subscriber. The ticker is the only
 * writer of last_seq, so it reads it without the lock. */
static int topic_publish(topic_t *t) {
  uint64_t seq = t->last_seq + 1;
  char json[UPDATE_JSON_MAX];
  if (!format_update(t, seq, json))
    return -ENOMEM;
  int rc = keel_mutex_lock(&t->lock);
  if (rc < 0)
    return rc;
  memcpy(t->ring[(seq - 1) % RING_SIZE].json, json, sizeof json);
  t->last_seq = seq;
  for (subscription_t *s = t->subscribers; s; s = s->next)
    keel_alert_ring(s->conn->alert);
  keel_mutex_unlock(&t->lock);
  return 0;
}

/* Copies update seq out: 1; 0 when it is not made yet; -ENOSPC when the
 * ring no longer has it (the client fell behind by more than the ring). */
static int topic_copy(topic_t *t, uint64_t seq, char *out) {
  int rc = keel_mutex_lock(&t->lock);
  if (rc < 0)
    return rc;
  rc = 1;
  if (seq > t->last_seq)
    rc = 0;
  else if (seq < topic_oldest(t))
    rc = -ENOSPC;
  else
    memcpy(out, t->ring[(seq - 1) % RING_SIZE].json, UPDATE_JSON_MAX);
  keel_mutex_unlock(&t->lock);
  return rc;
}

/* Starts (or restarts) sub at update from, or at the next one (from 0, or
 * past the last); an update no longer kept starts it at the oldest kept. */
static int subscribe(topic_t *t, subscription_t *sub, uint64_t from) {
  int rc = keel_mutex_lock(&t->lock);
  if (rc < 0)
    return rc;
  uint64_t next = t->last_seq + 1, oldest = topic_oldest(t);
  if (from > 0 && from < next)
    next = from > oldest ? from : oldest;
  sub->next_seq = next;
  if (!sub->linked) {
    sub->prev = NULL;
    sub->next = t->subscribers;
    if (t->subscribers)
      t->subscribers->prev = sub;
    t->subscribers = sub;
    sub->linked = true;
  }
  keel_mutex_unlock(&t->lock);
  return 0;
}

static int unsubscribe(topic_t *t, subscription_t *sub) {
  int rc = keel_mutex_lock(&t->lock);
  if (rc < 0)
    return rc;
  if (sub->linked) {
    if (sub->prev)
      sub->prev->next = sub->next;
    else
      t->subscribers = sub->next;
    if (sub->next)
      sub->next->prev = sub->prev;
    sub->linked = false;
  }
  keel_mutex_unlock(&t->lock);
  return 0;
}

static int find_topic(const app_t *app, const char *name) {
  for (size_t i = 0; name && i < app->ntopics; i++)
    if (strcmp(app->topics[i].name, name) == 0)
      return (int)i;
  return -1;
}

static int ticker(void *arg) {
  app_t *app = arg;
  int64_t period_ns = KEEL_NS_PER_SEC / app->rate, next_ns = keel_now_ns();
  for (;;) {
    next_ns += period_ns;
    if (keel_sleep_until(next_ns) < 0)
      return 0;
    for (size_t i = 0; i < app->ntopics; i++)
      if (topic_publish(&app->topics[i]) < 0)
        return 0;
  }
}

/* ---- Sending -------------------------------------------------------------------- */

static void too_slow(conn_t *conn) {
  if (conn->dropped)
    return;
  conn->dropped = true;
  conn->close_code = KEEL_WS_POLICY;
  conn->close_reason = "too slow";
}

/* Sends text; a client that does not take it within SEND_TIMEOUT_MS is
 * too slow (the send fails with -ETIMEDOUT, or -ENOTRECOVERABLE when the
 * frame was begun and could not be finished). */
static int conn_send(conn_t *conn, const char *text, size_t len) {
  int64_t limit_ns = keel_now_ns() + SEND_TIMEOUT_MS * KEEL_NS_PER_MS;
  int64_t prev_ns = keel_task_set_deadline(limit_ns);
  if (prev_ns > 0 && prev_ns < limit_ns)
    keel_task_set_deadline(prev_ns);
  int rc = keel_ws_send(conn->ws, KEEL_WS_TEXT, text, len);
  keel_task_set_deadline(prev_ns);
  if (rc < 0 && keel_now_ns() >= limit_ns)
    too_slow(conn);
  return rc;
}

/* Sends text, which it frees (NULL: out of memory). */
static int send_text(conn_t *conn, char *text) {
  int rc = text ? conn_send(conn, text, strlen(text)) : -ENOMEM;
  cJSON_free(text);
  return rc;
}

/* Sends an answer and logs the request once it is written. */
static int answer_req(conn_t *conn, const cJSON *id, const char *method, const cJSON *result,
                      const char *error) {
  char *text = feed_answer(id, result, error), *line = request_line(conn, id, method);
  int rc = text ? conn_send(conn, text, strlen(text)) : -ENOMEM;
  if (rc == 0)
    log_text(conn->app, line);
  cJSON_free(text);
  cJSON_free(line);
  return rc;
}

/* Sends the client every update it is owed, topic by topic. */
static int deliver(conn_t *conn) {
  char text[UPDATE_JSON_MAX];
  for (size_t i = 0; i < conn->app->ntopics; i++) {
    subscription_t *sub = &conn->subs[i];
    int rc = 0;
    while (sub->linked && (rc = topic_copy(&conn->app->topics[i], sub->next_seq, text)) > 0) {
      if ((rc = conn_send(conn, text, strlen(text))) < 0)
        return rc;
      sub->next_seq++;
    }
    if (rc == -ENOSPC)
      too_slow(conn);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* ---- Requests ------------------------------------------------------------------- */

typedef struct sleeper {
  conn_t *conn;
  int64_t ms;
  char *answer, *line;
} sleeper_t;

static int sleeper_task(void *arg) {
  sleeper_t *s = arg;
  conn_t *conn = s->conn;
  if (keel_sleep_ms(s->ms) == 0) {
    if (conn_send(conn, s->answer, strlen(s->answer)) == 0) {
      log_text(conn->app, s->line);
    } else {
      conn->broken = true;
      keel_alert_ring(conn->alert);
    }
  }
  conn->sleepers--;
  cJSON_free(s->answer);
  cJSON_free(s->line);
  free(s);
  return 0;
}

/* "sleep": a task in the connection's scope answers after params.ms. */
static int start_sleep(conn_t *conn, const cJSON *id, const cJSON *params) {
  const cJSON *ms = cJSON_GetObjectItemCaseSensitive(params, "ms");
  if (!cJSON_IsNumber(ms) || !(ms->valuedouble >= 0 && ms->valuedouble <= MAX_SLEEP_MS))
    return answer_req(conn, id, "sleep", NULL, "params.ms: a number of milliseconds to 60000");
  if (conn->sleepers >= MAX_SLEEPS)
    return answer_req(conn, id, "sleep", NULL, "too many requests pending");
  sleeper_t *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  *s = (sleeper_t){.conn = conn,
                   .ms = (int64_t)ms->valuedouble,
                   .answer = feed_answer(id, params, NULL),
                   .line = request_line(conn, id, "sleep")};
  keel_spawn_opts_t opts = {.name = "sleep", .stack_size = 32 * 1024};
  int rc = s->answer ? keel_spawn(conn->scope, sleeper_task, s, &opts) : -ENOMEM;
  if (rc < 0) {
    cJSON_free(s->answer);
    cJSON_free(s->line);
    free(s);
    return rc;
  }
  conn->sleepers++;
  return 0;
}

static int on_req(conn_t *conn, const feed_request_t *r) {
  if (!conn->authed)
    return answer_req(conn, r->id, r->method, NULL, "not authenticated");
  if (r->method && strcmp(r->method, "echo") == 0)
    return answer_req(conn, r->id, r->method, r->params, NULL);
  if (r->method && strcmp(r->method, "sleep") == 0)
    return start_sleep(conn, r->id, r->params);
  return answer_req(conn, r->id, r->method, NULL, "unknown method");
}

static int on_auth(conn_t *conn, const feed_request_t *r) {
  bool ok = r->token && strcmp(r->token, conn->app->token) == 0;
  int rc = send_text(conn, feed_auth_answer(ok, conn->number));
  if (rc == 0 && ok && !conn->authed) {
    conn->authed = true;
    log_event(conn, "auth");
  }
  return rc;
}

/* "sub" and "unsub". */
static int on_topic_op(conn_t *conn, const feed_request_t *r) {
  const char *op = r->op == FEED_OP_SUB ? "sub" : "unsub";
  int i = find_topic(conn->app, r->topic);
  if (!conn->authed)
    return send_text(conn, feed_topic_answer(op, r->topic, "not authenticated"));
  if (i < 0)
    return send_text(conn, feed_topic_answer(op, r->topic, "unknown topic"));
  topic_t *t = &conn->app->topics[i];
  int rc;
  if (r->op == FEED_OP_UNSUB)
    rc = unsubscribe(t, &conn->subs[i]);
  else if (r->from_given && !r->from_ok)
    return send_text(conn, feed_topic_answer(op, r->topic, "from: an update number"));
  else
    rc = subscribe(t, &conn->subs[i], r->from);
  return rc < 0 ? rc : send_text(conn, feed_topic_answer(op, r->topic, NULL));
}

/* Handles one message; a negative return ends the connection (with
 * conn->close_code when set). */
static int on_message(conn_t *conn, int opcode, const char *data, size_t len) {
  if (opcode != KEEL_WS_TEXT) {
    conn->close_code = KEEL_WS_UNSUPPORTED;
    conn->close_reason = "text frames only";
    return -EPROTO;
  }
  feed_request_t r;
  if (feed_request_parse(data, len, &r) < 0) {
    conn->close_code = KEEL_WS_INVALID_DATA;
    conn->close_reason = "not JSON (or nested too deep)";
    return -EPROTO;
  }
  int rc;
  switch (r.op) {
  case FEED_OP_AUTH:
    rc = on_auth(conn, &r);
    break;
  case FEED_OP_SUB:
  case FEED_OP_UNSUB:
    rc = on_topic_op(conn, &r);
    break;
  case FEED_OP_REQ:
    rc = on_req(conn, &r);
    break;
  default:
    /* Not a request: not logged. */
    rc = send_text(conn, feed_answer(r.id, NULL, "unknown op"));
    break;
  }
  feed_request_free(&r);
  return rc;
}

/* ---- Connections ------------------------------------------------------------------ */

static int chaos_task(void *arg) {
  conn_t *conn = arg;
  int64_t ms = conn->app->chaos_ms;
  if (keel_sleep_ms(ms / 2 + (int64_t)keel_random_below((uint64_t)ms + 1)) < 0)
    return 0;
  conn->dropped = true;
  /* Shut, not closed: the WebSocket still owns the socket. Its close
   * frame then fails to go out, as the client should see. */
  keel_stream_shutdown(keel_ws_stream(conn->ws), SHUT_RDWR);
  keel_alert_ring(conn->alert);
  return 0;
}

static conn_t *conn_open(app_t *app, keel_ws_t *ws) {
  conn_t *conn = calloc(1, sizeof *conn + app->ntopics * sizeof conn->subs[0]);
  if (!conn)
    return NULL;
  conn->app = app;
  conn->ws = ws;
  conn->number = atomic_fetch_add(&app->conns, 1) + 1;
  for (size_t i = 0; i < app->ntopics; i++)
    conn->subs[i].conn = conn;
  if (keel_alert_open(&conn->alert) < 0 || keel_scope_open(NULL, &conn->scope) < 0) {
    keel_alert_close(conn->alert);
    free(conn);
    return NULL;
  }
  log_event(conn, "open");
  keel_spawn_opts_t opts = {.name = "chaos", .stack_size = 16 * 1024};
  if (app->chaos_ms > 0 && keel_spawn(conn->scope, chaos_task, conn, &opts) < 0)
    keel_log(KEEL_LOG_WARN, "ws-feed-server: connection %llu: no chaos task",
             (unsigned long long)conn->number);
  return conn;
}

/* One task serves the connection: it waits for the client's next message
 * with its alert enabled, so that the ticker's ring cuts the wait short
 * (-EINTR, nothing lost) to send the updates owed. */
static void conn_run(conn_t *conn) {
  for (;;) {
    keel_alert_take(conn->alert);
    if (conn->dropped || conn->broken || deliver(conn) < 0)
      return;
    const void *data;
    size_t len;
    keel_alert_enable(conn->alert);
    int rc = keel_ws_recv(conn->ws, &data, &len);
    keel_alert_disable(conn->alert);
    if (rc == -EINTR)
      continue;
    if (rc <= 0 || conn->dropped || on_message(conn, rc, data, len) < 0)
      return;
  }
}

static void conn_close(conn_t *conn) {
  keel_scope_cancel(conn->scope, KEEL_CANCEL_USER);
  keel_scope_close(conn->scope);
  /* The ticker may ring the alert until the subscriptions are gone. Every
   * holder of a topic's lock lets go at once, so this shield need not be
   * bounded. */
  keel_shield_begin(KEEL_DEADLINE_NONE);
  for (size_t i = 0; i < conn->app->ntopics; i++)
    unsubscribe(&conn->app->topics[i], &conn->subs[i]);
  keel_shield_end();
  keel_alert_close(conn->alert);
  log_event(conn, conn->dropped ? "drop" : "close");
  /* A client that reads nothing is not waited on for ever. */
  keel_task_set_deadline(keel_now_ns() + 2 * CLOSE_TIMEOUT_MS * KEEL_NS_PER_MS);
  keel_ws_close(conn->ws, conn->close_code, conn->close_reason);
  free(conn);
}

static int handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  app_t *app = ctx;
  if (strcmp(keel_http_path(req), "/") != 0) {
    keel_http_set_status(res, 404);
    return keel_http_send(res, "not found\n", 10);
  }
  keel_ws_t *ws;
  int rc = keel_ws_accept(req, res, &app->ws, &ws);
  if (rc < 0)
    return keel_http_responded(res) ? 0 : rc;
  conn_t *conn = conn_open(app, ws);
  if (!conn) {
    keel_ws_close(ws, KEEL_WS_INTERNAL_ERROR, "out of memory");
    return 0;
  }
  conn_run(conn);
  conn_close(conn);
  return 0;
}

/* ---- Main --------------------------------------------------------------------------- */

static void on_listen(const keel_addr_t *addr, void *ctx) {
  char text[KEEL_ADDRSTRLEN];
  (void)ctx;
  printf("ws-feed-server listening on %s\n", keel_addr_format(addr, text, sizeof text));
  fflush(stdout);
}

static int serve(app_t *app) {
  keel_http_server_opts_t opts = {.handler = handler, .ctx = app, .on_listen = on_listen};
  keel_scope_t *scope;
  int rc = keel_scope_open(&(keel_scope_opts_t){.name = "ticker"}, &scope);
  if (rc < 0)
    return rc;
  if (app->rate > 0)
    rc = keel_spawn(scope, ticker, app, &(keel_spawn_opts_t){.name = "ticker"});
  if (rc == 0)
    rc = keel_http_serve(app->hostport, &opts);
  keel_scope_cancel(scope, KEEL_CANCEL_USER);
  keel_scope_close(scope);
  return rc;
}

static int main_task(void *arg) {
  app_t *app = arg;
  int rc = serve(app);
  if (rc < 0) {
    fprintf(stderr, "ws-feed-server: %s: %s\n", app->hostport, keel_strerror(rc));
    return 1;
  }
  return 0;
}

static void usage(FILE *out) {
  fprintf(out, "usage: ws-feed-server [options]\n"
               "  --host H                address to listen on (default 127.0.0.1)\n"
               "  --port P                port, 0 = any free one (default 9001)\n"
               "  --token T               the token auth wants (default \"secret\")\n"
               "  --topics a,b,c          the topics (default a,b,c): up to 64, of up to 64\n"
               "                          printable ASCII bytes but for '\"' and '\\'\n"
               "  --rate N                updates per second per topic (default 10; 0: none)\n"
               "  --workers N             worker threads, 0 = one per CPU (default 1)\n"
               "  --backend B             auto|uring|epoll (default auto)\n"
               "  --chaos-drop-every MS   shut each connection after MS/2..3MS/2 ms\n"
               "  --log FILE              append a JSON line per answered request and event\n"
               "  --help                  this text\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
    return false;
  *out = v;
  return true;
}

static bool parse_backend(const char *s, keel_backend_t *out) {
  if (strcmp(s, "auto") == 0)
    *out = KEEL_BACKEND_AUTO;
  else if (strcmp(s, "uring") == 0 || strcmp(s, "io_uring") == 0)
    *out = KEEL_BACKEND_URING;
  else if (strcmp(s, "epoll") == 0)
    *out = KEEL_BACKEND_EPOLL;
  else
    return false;
  return true;
}

/* Printable ASCII but for '"' and '\\', so that a name goes into JSON as it
 * is and an update always fits UPDATE_JSON_MAX. */
static bool topic_name_ok(const char *name, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c <= ' ' || c > '~' || c == '"' || c == '\\')
      return false;
  }
  return len > 0 && len <= TOPIC_NAME_MAX;
}

/* "a,b,c" into app->topics: each name once. */
static bool parse_topics(const char *list, app_t *app) {
  free(app->topics);
  app->ntopics = 0;
  app->topics = calloc(MAX_TOPICS, sizeof app->topics[0]);
  if (!app->topics)
    return false;
  for (const char *p = list;; p++) {
    size_t n = strcspn(p, ",");
    if (!topic_name_ok(p, n) || app->ntopics == MAX_TOPICS)
      return false;
    topic_t *t = &app->topics[app->ntopics];
    memcpy(t->name, p, n);
    if (find_topic(app, t->name) >= 0)
      return false;
    app->ntopics++;
    p += n;
    if (*p == '\0')
      return true;
  }
}

static bool parse_option(int c, const char *value, app_t *app, const char **host, long *port) {
  long n = 0;
  switch (c) {
  case 'h':
    *host = value;
    return true;
  case 'p':
    return parse_long(value, 0, 65535, port);
  case 't':
    app->token = value;
    return true;
  case 'T':
    return parse_topics(value, app);
  case 'r':
    return parse_long(value, 0, 100000, &app->rate);
  case 'w':
    if (!parse_long(value, 0, 4096, &n))
      return false;
    app->workers = (int)n;
    return true;
  case 'b':
    return parse_backend(value, &app->backend);
  case 'c':
    if (!parse_long(value, 1, 86400000, &n))
      return false;
    app->chaos_ms = n;
    return true;
  case 'l':
    app->log_fd = open(value, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (app->log_fd < 0)
      fprintf(stderr, "ws-feed-server: %s: %s\n", value, strerror(errno));
    return app->log_fd >= 0;
  default:
    return false;
  }
}

/* Returns 0 to run, 1 on bad flags, 2 after --help. */
static int parse_args(int argc, char **argv, app_t *app) {
  static const struct option longopts[] = {
      {"host", required_argument, NULL, 'h'},
      {"port", required_argument, NULL, 'p'},
      {"token", required_argument, NULL, 't'},
      {"topics", required_argument, NULL, 'T'},
      {"rate", required_argument, NULL, 'r'},
      {"workers", required_argument, NULL, 'w'},
      {"backend", required_argument, NULL, 'b'},
      {"chaos-drop-every", required_argument, NULL, 'c'},
      {"log", required_argument, NULL, 'l'},
      {"help", no_argument, NULL, 'H'},
      {NULL, 0, NULL, 0},
  };
  const char *host = "127.0.0.1";
  long port = 9001;
  int c, idx = 0;
  bool ok = true;
  while (ok && (c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
    if (c == 'H') {
      usage(stdout);
      return 2;
    }
    ok = c != '?' && parse_option(c, optarg, app, &host, &port);
    if (!ok && c != '?')
      fprintf(stderr, "ws-feed-server: bad value for --%s: %s\n", longopts[idx].name, optarg);
  }
  if (ok && optind < argc) {
    fprintf(stderr, "ws-feed-server: unexpected argument: %s\n", argv[optind]);
    ok = false;
  }
  if (ok && app->ntopics == 0)
    ok = parse_topics("a,b,c", app);
  bool v6 = strchr(host, ':') != NULL && host[0] != '[';
  int n = snprintf(app->hostport, sizeof app->hostport, v6 ? "[%s]:%ld" : "%s:%ld", host, port);
  if (ok && (n < 0 || (size_t)n >= sizeof app->hostport)) {
    fprintf(stderr, "ws-feed-server: host too long\n");
    ok = false;
  }
  if (!ok)
    usage(stderr);
  return ok ? 0 : 1;
}

static int topics_init(app_t *app) {
  for (size_t i = 0; i < app->ntopics; i++) {
    topic_t *t = &app->topics[i];
    t->ring = calloc(RING_SIZE, sizeof t->ring[0]);
    if (!t->ring)
      return -ENOMEM;
    keel_mutex_init(&t->lock);
  }
  return 0;
}

static void app_free(app_t *app) {
  for (size_t i = 0; app->topics && i < app->ntopics; i++) {
    if (app->topics[i].ring)
      keel_mutex_destroy(&app->topics[i].lock);
    free(app->topics[i].ring);
  }
  free(app->topics);
  if (app->log_fd >= 0)
    close(app->log_fd);
}

int main(int argc, char **argv) {
  app_t app = {.token = "secret", .rate = 10, .workers = 1, .log_fd = -1};
  app.ws = (keel_ws_opts_t){.max_message = 64 * 1024, .close_timeout_ms = CLOSE_TIMEOUT_MS};
  int rc = parse_args(argc, argv, &app);
  if (rc == 0 && topics_init(&app) < 0) {
    fprintf(stderr, "ws-feed-server: out of memory\n");
    rc = 1;
  }
  if (rc != 0) {
    app_free(&app);
    return rc == 2 ? 0 : 1;
  }
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = app.workers;
  cfg.backend = app.backend;
  cfg.handle_signals = true;
  rc = keel_run(&cfg, main_task, &app);
  if (rc < 0)
    fprintf(stderr, "ws-feed-server: cannot start the runtime: %s\n", keel_strerror(rc));
  app_free(&app);
  return rc < 0 ? 1 : rc;
}
