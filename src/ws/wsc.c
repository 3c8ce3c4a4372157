/* The reconnecting WebSocket client (include/keel/wsc.h).
 *
 * One owner task per client. Callers hand it work through lists under the
 * client's mutex and ring its alert; it serves control first, then the
 * topics to (un)subscribe, then queued data, then reads the socket with
 * the alert enabled, so that a ring cuts the read short.
 *
 * Invariant: an item (a send or a request) is reachable by the owner only
 * while linked (on the queue, or in the id map), and the owner touches it
 * only under the mutex. The caller unlinks it under the mutex before it
 * returns, on every path, so its frame may go: there is nothing stale to
 * clean up later. The owner copies what it writes into its own buffer and
 * a response into the caller's buffer, under the mutex. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/chan.h"
#include "keel/sync.h"
#include "keel/metrics.h"
#include "keel/wsc.h"
#include "handshake.h"

#define MS(x) ((int64_t)(x)*KEEL_NS_PER_MS)

typedef struct link {
  struct link *prev, *next;
} link_t;

static void link_init(link_t *l) { l->prev = l->next = l; }
static bool link_empty(const link_t *l) { return l->next == l; }
static bool link_on(const link_t *l) { return l->next != NULL && l->next != l; }
static void link_remove(link_t *l) {
  l->prev->next = l->next;
  l->next->prev = l->prev;
  l->prev = l->next = l;
}
static void link_tail(link_t *head, link_t *l) {
  l->prev = head->prev;
  l->next = head;
  head->prev->next = l;
  head->prev = l;
}
static void link_head(link_t *head, link_t *l) {
  l->next = head->next;
  l->prev = head;
  head->next->prev = l;
  head->next = l;
}
#define CONTAINER(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

enum { IT_SEND, IT_REQ };
enum { ST_NEW, ST_QUEUED, ST_PENDING, ST_DONE };

typedef struct item {
  link_t node;        /* on c->queue while QUEUED */
  struct item *hnext; /* in the id map while PENDING */
  int kind, state, result;
  keel_wsc_req_t *req;
  const void *data;
  size_t len;
  int opcode;
  keel_notify_t done;
  const char *why;
} item_t;

/* A request that timed out (or was cancelled) after it was sent: its id
 * stays taken on that connection until the late answer comes (dropped),
 * the connection ends, or the sweep finds it old, so that the answer can
 * never complete a later request that reuses the id. */
typedef struct tomb {
  struct tomb *next;
  uint64_t id;
  int64_t until_ns;
} tomb_t;

typedef struct slot {
  char *p;
  size_t cap, len;
  uint64_t seq, epoch;
  bool has_seq;
  int opcode;
} slot_t;

typedef struct topic {
  struct topic *hnext;
  link_t dirty; /* on c->dirty while the owner has something to do for it */
  link_t guards;
  unsigned live, nguards;
  bool subscribed; /* owner: the subscribe went out on this epoch */
  bool has_seq;
  uint64_t next_seq;
  size_t len;
  char name[];
} topic_t;

struct keel_wsc_sub {
  link_t node; /* on t->guards */
  keel_wsc_t *c;
  topic_t *t;
  bool live, ended;
  slot_t *slots;
  size_t cap, head, count;
  uint64_t dropped;
  keel_notify_t avail;
};

struct keel_wsc_out {
  char *p;
  size_t len, cap;
  int opcode;
};

/* Requests failed, by why: the error they failed with. */
enum { FAIL_DISCONNECTED, FAIL_TIMEOUT, FAIL_CANCELLED, FAIL_CLOSED, FAIL_OTHER, FAIL_KINDS };
static const char *const fail_names[FAIL_KINDS] = {"disconnected", "timeout", "cancelled", "closed",
                                                   "error"};

/* The client's series in the runtime's metrics (NULL ones count nothing). */
typedef struct wsc_metrics {
  keel_metric_t *connects, *reconnects, *failures, *epoch, *pending;
  keel_metric_t *failed[FAIL_KINDS];
  keel_metric_t *events_dropped, *updates_dropped, *responses_dropped;
} wsc_metrics_t;

/* Adds n to a counter or gauge of the client's (none: nothing). */
static void count(keel_metric_t *m, int64_t n) {
  if (m)
    keel_metric_gauge_add(m, n);
}

struct keel_wsc {
  pthread_mutex_t mu;
  atomic_long refs;    /* handles, guards, and the owner */
  atomic_long handles; /* the last one released closes */
  keel_wsc_opts_t o;
  keel_ws_opts_t wso;
  keel_wsc_proto_t p;
  char *url;
  keel_alert_t *alert;
  /* Under mu: */
  bool up, ended, want_close, want_reconnect;
  char reconnect_reason[64];
  link_t queue;
  item_t **map;
  size_t map_size, pending;
  topic_t **topics;
  size_t topics_size, ntopics;
  link_t dirty;
  tomb_t *tombs;
  atomic_size_t ntombs; /* written under mu, read by the owner without */
  int64_t next_sweep;
  keel_wsc_stats_t st;
  wsc_metrics_t m; /* the same in the runtime's metrics, by the client's name */
  atomic_uint_fast64_t epoch;
  keel_chan_t *events;
  /* The owner's: */
  keel_ws_t *ws;
  keel_wsc_out_t out;
  unsigned failures;
  char why[160];
};

/* ---- Messages being built ------------------------------------------------------ */

static int out_room(keel_wsc_out_t *o, size_t more) {
  if (o->len + more <= o->cap)
    return 0;
  size_t cap = o->cap ? o->cap : 256;
  while (cap < o->len + more)
    cap *= 2;
  char *p = realloc(o->p, cap);
  if (!p)
    return -ENOMEM;
  o->p = p;
  o->cap = cap;
  return 0;
}

int keel_wsc_out_append(keel_wsc_out_t *o, const void *data, size_t len) {
  if (!o || (!data && len))
    return -EINVAL;
  int rc = out_room(o, len);
  if (rc < 0)
    return rc;
  if (len)
    memcpy(o->p + o->len, data, len);
  o->len += len;
  return 0;
}

int keel_wsc_out_printf(keel_wsc_out_t *o, const char *fmt, ...) {
  if (!o || !fmt)
    return -EINVAL;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(o->p ? o->p + o->len : NULL, o->p ? o->cap - o->len : 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return -EINVAL;
  if (o->len + (size_t)n + 1 > o->cap) {
    int rc = out_room(o, (size_t)n + 1);
    if (rc < 0)
      return rc;
    va_start(ap, fmt);
    vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
  }
  o->len += (size_t)n;
  return 0;
}

void keel_wsc_out_set_opcode(keel_wsc_out_t *o, int opcode) {
  if (o)
    o->opcode = opcode;
}

static void out_reset(keel_wsc_out_t *o) {
  o->len = 0;
  o->opcode = KEEL_WS_TEXT;
}

/* ---- The id map and the topics -------------------------------------------------- */

static size_t id_slot(const keel_wsc_t *c, uint64_t id) {
  return (size_t)((id * UINT64_C(0x9E3779B97F4A7C15)) >> 17) & (c->map_size - 1);
}

static item_t *map_find(keel_wsc_t *c, uint64_t id) {
  for (item_t *it = c->map[id_slot(c, id)]; it; it = it->hnext)
    if (it->req->id == id)
      return it;
  return NULL;
}

static void map_grow(keel_wsc_t *c) {
  size_t n = c->map_size * 2;
  item_t **m = calloc(n, sizeof *m);
  if (!m)
    return; /* longer chains, still correct */
  item_t **old = c->map;
  size_t on = c->map_size;
  c->map = m;
  c->map_size = n;
  for (size_t i = 0; i < on; i++)
    for (item_t *it = old[i], *next; it; it = next) {
      next = it->hnext;
      size_t s = id_slot(c, it->req->id);
      it->hnext = m[s];
      m[s] = it;
    }
  free(old);
}

static void map_add(keel_wsc_t *c, item_t *it) {
  if (c->pending >= c->map_size)
    map_grow(c);
  size_t s = id_slot(c, it->req->id);
  it->hnext = c->map[s];
  c->map[s] = it;
  it->state = ST_PENDING;
  c->pending++;
  count(c->m.pending, 1);
}

static bool map_remove(keel_wsc_t *c, item_t *it) {
  for (item_t **pp = &c->map[id_slot(c, it->req->id)]; *pp; pp = &(*pp)->hnext)
    if (*pp == it) {
      *pp = it->hnext;
      it->hnext = NULL;
      c->pending--;
      count(c->m.pending, -1);
      return true;
    }
  return false;
}

static tomb_t **tomb_find(keel_wsc_t *c, uint64_t id) {
  for (tomb_t **pp = &c->tombs; *pp; pp = &(*pp)->next)
    if ((*pp)->id == id)
      return pp;
  return NULL;
}

static void tomb_add(keel_wsc_t *c, uint64_t id) {
  tomb_t *t = malloc(sizeof *t);
  if (!t)
    return;
  t->id = id;
  t->until_ns = keel_now_ns() + 2 * MS(c->o.request_timeout_ms);
  t->next = c->tombs;
  c->tombs = t;
  c->ntombs++;
}

static void tombs_clear(keel_wsc_t *c, bool all) {
  int64_t now = keel_now_ns();
  for (tomb_t **pp = &c->tombs; *pp;) {
    tomb_t *t = *pp;
    if (all || t->until_ns <= now) {
      *pp = t->next;
      free(t);
      c->ntombs--;
    } else {
      pp = &t->next;
    }
  }
}

static size_t name_slot(const keel_wsc_t *c, const char *name, size_t len) {
  uint64_t h = UINT64_C(1469598103934665603);
  for (size_t i = 0; i < len; i++)
    h = (h ^ (unsigned char)name[i]) * UINT64_C(1099511628211);
  return (size_t)h & (c->topics_size - 1);
}

static topic_t *topic_find(keel_wsc_t *c, const char *name, size_t len) {
  for (topic_t *t = c->topics[name_slot(c, name, len)]; t; t = t->hnext)
    if (t->len == len && memcmp(t->name, name, len) == 0)
      return t;
  return NULL;
}

static void topics_grow(keel_wsc_t *c) {
  size_t n = c->topics_size * 2;
  topic_t **m = calloc(n, sizeof *m);
  if (!m)
    return;
  topic_t **old = c->topics;
  size_t on = c->topics_size;
  c->topics = m;
  c->topics_size = n;
  for (size_t i = 0; i < on; i++)
    for (topic_t *t = old[i], *next; t; t = next) {
      next = t->hnext;
      size_t s = name_slot(c, t->name, t->len);
      t->hnext = m[s];
      m[s] = t;
    }
  free(old);
}

static void topic_unlink(keel_wsc_t *c, topic_t *t) {
  for (topic_t **pp = &c->topics[name_slot(c, t->name, t->len)]; *pp; pp = &(*pp)->hnext)
    if (*pp == t) {
      *pp = t->hnext;
      c->ntopics--;
      return;
    }
}

static void mark_dirty(keel_wsc_t *c, topic_t *t) {
  if (!link_on(&t->dirty))
    link_tail(&c->dirty, &t->dirty);
}

/* Under mu: wakes the owner for data, once it is connected (between
 * connections the owner looks at the queues when it is next up). */
static void ring_data(keel_wsc_t *c) {
  if (c->alert && c->up)
    keel_alert_ring(c->alert);
}

static void ring_control(keel_wsc_t *c) {
  if (c->alert)
    keel_alert_ring(c->alert);
}

/* ---- Handles --------------------------------------------------------------------- */

static void client_free(keel_wsc_t *c) {
  for (size_t i = 0; i < c->topics_size; i++)
    for (topic_t *t = c->topics[i], *next; t; t = next) {
      next = t->hnext;
      free(t);
    }
  free(c->topics);
  free(c->map);
  tombs_clear(c, true);
  free(c->out.p);
  free(c->url);
  if (c->events)
    keel_chan_close(c->events);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static void unref(keel_wsc_t *c) {
  if (atomic_fetch_sub(&c->refs, 1) == 1)
    client_free(c);
}

keel_wsc_t *keel_wsc_ref(keel_wsc_t *c) {
  if (c) {
    atomic_fetch_add(&c->handles, 1);
    atomic_fetch_add(&c->refs, 1);
  }
  return c;
}

int keel_wsc_close(keel_wsc_t *c) {
  if (!c)
    return -EINVAL;
  pthread_mutex_lock(&c->mu);
  int rc = c->ended ? -ESHUTDOWN : 0;
  c->want_close = true;
  ring_control(c);
  pthread_mutex_unlock(&c->mu);
  return rc;
}

void keel_wsc_release(keel_wsc_t *c) {
  if (!c)
    return;
  if (atomic_fetch_sub(&c->handles, 1) == 1)
    keel_wsc_close(c);
  unref(c);
}

int keel_wsc_reconnect(keel_wsc_t *c, const char *reason) {
  if (!c)
    return -EINVAL;
  pthread_mutex_lock(&c->mu);
  int rc = c->ended ? -ESHUTDOWN : 0;
  c->want_reconnect = true;
  snprintf(c->reconnect_reason, sizeof c->reconnect_reason, "%s", reason ? reason : "asked");
  ring_control(c);
  pthread_mutex_unlock(&c->mu);
  return rc;
}

uint64_t keel_wsc_epoch(const keel_wsc_t *c) {
  return c ? atomic_load_explicit(&c->epoch, memory_order_acquire) : 0;
}

bool keel_wsc_connected(const keel_wsc_t *c) {
  if (!c)
    return false;
  pthread_mutex_lock((pthread_mutex_t *)&c->mu);
  bool up = c->up;
  pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
  return up;
}

/* ---- Metrics ------------------------------------------------------------------------ */

static int wsc_series(const char *client, keel_metric_type_t type, const char *name,
                      const char *help, keel_metric_t **out) {
  keel_metric_family_t *f;
  keel_metric_opts_t o = {.type = type, .name = name, .help = help, .labels = {"client"}};
  int rc = keel_metrics_register(&o, &f);
  return rc < 0 ? rc : keel_metrics_series(f, (const char *[]){client}, out);
}

static int wsc_failed_series(const char *client, keel_metric_t **out) {
  keel_metric_family_t *f;
  keel_metric_opts_t o = {.type = KEEL_METRIC_COUNTER,
                          .name = "keel_wsc_requests_failed_total",
                          .help = "Reconnecting client: requests failed, by why.",
                          .labels = {"client", "reason"}};
  int rc = keel_metrics_register(&o, &f);
  for (int i = 0; rc == 0 && i < FAIL_KINDS; i++)
    rc = keel_metrics_series(f, (const char *[]){client, fail_names[i]}, &out[i]);
  return rc;
}

/* Series labelled client="name" (clients of one name share them). A
 * failure leaves the rest uncounted, never the client unusable. */
static void metrics_open(keel_wsc_t *c) {
  const char *client = c->o.name ? c->o.name : "wsc";
  wsc_metrics_t *m = &c->m;
  const keel_metric_type_t C = KEEL_METRIC_COUNTER, G = KEEL_METRIC_GAUGE;
  int rc =
      wsc_series(client, C, "keel_wsc_connects_total",
                 "Reconnecting client: connections opened (TCP and upgrade done).", &m->connects);
  if (rc == 0)
    rc = wsc_series(client, C, "keel_wsc_reconnects_total",
                    "Reconnecting client: connections through auth, after the first.",
                    &m->reconnects);
  if (rc == 0)
    rc = wsc_series(client, C, "keel_wsc_failures_total",
                    "Reconnecting client: connect attempts or connections that failed.",
                    &m->failures);
  if (rc == 0)
    rc = wsc_series(client, G, "keel_wsc_epoch",
                    "Reconnecting client: the connection epoch (0: never connected).", &m->epoch);
  if (rc == 0)
    rc = wsc_series(client, G, "keel_wsc_pending_requests",
                    "Reconnecting client: requests sent and awaiting their response.", &m->pending);
  if (rc == 0)
    rc = wsc_failed_series(client, m->failed);
  if (rc == 0)
    rc = wsc_series(client, C, "keel_wsc_events_dropped_total",
                    "Reconnecting client: message events dropped (event queue full).",
                    &m->events_dropped);
  if (rc == 0)
    rc = wsc_series(client, C, "keel_wsc_updates_dropped_total",
                    "Reconnecting client: updates dropped from full subscription queues.",
                    &m->updates_dropped);
  if (rc == 0)
    rc = wsc_series(client, C, "keel_wsc_responses_dropped_total",
                    "Reconnecting client: responses for no pending request (late, unknown id).",
                    &m->responses_dropped);
  if (rc < 0)
    keel_log(KEEL_LOG_WARN, "wsc %s: metrics: %s", client, keel_strerror(rc));
}

static void count_failed(keel_wsc_t *c, int err) {
  int kind = err == -ECONNRESET  ? FAIL_DISCONNECTED
             : err == -ETIMEDOUT ? FAIL_TIMEOUT
             : err == -ECANCELED ? FAIL_CANCELLED
             : err == -ESHUTDOWN ? FAIL_CLOSED
                                 : FAIL_OTHER;
  count(c->m.failed[kind], 1);
}

void keel_wsc_stats(keel_wsc_t *c, keel_wsc_stats_t *out) {
  pthread_mutex_lock(&c->mu);
  *out = c->st;
  out->epoch = keel_wsc_epoch(c);
  out->pending = c->pending;
  out->topics = 0;
  for (size_t i = 0; i < c->topics_size; i++)
    for (topic_t *t = c->topics[i]; t; t = t->hnext)
      out->topics += t->live > 0;
  pthread_mutex_unlock(&c->mu);
}

/* ---- Events -------------------------------------------------------------------------- */

/* Lifecycle events wait for room, but not past a close asked for (nobody
 * may be reading any more): the owner looks again every 20 ms. */
static void emit(keel_wsc_t *c, keel_wsc_event_t *ev) {
  if (!c->events)
    return;
  ev->at_ns = keel_now_ns();
  for (;;) {
    int rc = keel_chan_try_send(c->events, ev);
    if (rc != -EAGAIN)
      return;
    pthread_mutex_lock(&c->mu);
    bool closing = c->want_close;
    pthread_mutex_unlock(&c->mu);
    if (closing || keel_cancelled() != KEEL_CANCEL_NONE)
      return;
    if (keel_alert_wait(c->alert, keel_now_ns() + MS(20)) < 0)
      return;
  }
}

static void emit_life(keel_wsc_t *c, keel_wsc_event_type_t type, int err, const char *reason,
                      int64_t delay_ms) {
  keel_wsc_event_t ev = {.type = type, .epoch = keel_wsc_epoch(c), .err = err};
  ev.attempt = c->failures;
  ev.delay_ms = delay_ms;
  if (reason)
    snprintf(ev.reason, sizeof ev.reason, "%s", reason);
  emit(c, &ev);
}

static void emit_message(keel_wsc_t *c, keel_wsc_kind_t kind, int opcode, const void *data,
                         size_t len) {
  if (!c->events)
    return;
  keel_wsc_event_t ev = {.type = KEEL_WSC_EV_MESSAGE, .epoch = keel_wsc_epoch(c), .kind = kind};
  ev.opcode = opcode;
  ev.len = len;
  ev.at_ns = keel_now_ns();
  if (keel_chan_is_full(c->events) || !(ev.data = malloc(len + 1))) {
    pthread_mutex_lock(&c->mu);
    c->st.events_dropped++;
    count(c->m.events_dropped, 1);
    pthread_mutex_unlock(&c->mu);
    return;
  }
  memcpy(ev.data, data, len);
  ((char *)ev.data)[len] = '\0';
  if (keel_chan_try_send(c->events, &ev) != 0) {
    free(ev.data);
    pthread_mutex_lock(&c->mu);
    c->st.events_dropped++;
    count(c->m.events_dropped, 1);
    pthread_mutex_unlock(&c->mu);
  }
}

int keel_wsc_event(keel_wsc_t *c, keel_wsc_event_t *ev) {
  if (!c || !ev)
    return -EINVAL;
  if (!c->events)
    return -EPIPE;
  atomic_fetch_add(&c->refs, 1);
  int rc = keel_chan_recv(c->events, ev);
  unref(c);
  return rc;
}

/* ---- Requests and sends ------------------------------------------------------------- */

static void item_done(keel_wsc_t *c, item_t *it, int result, const char *why) {
  if (result < 0)
    count_failed(c, result);
  it->state = ST_DONE;
  it->result = result;
  it->why = why;
  keel_notify_one(&it->done);
}

/* Waits for the owner to finish it; unlinks it on every other way out. */
static int item_run(keel_wsc_t *c, item_t *it, int64_t timeout_ms) {
  keel_notify_init(&it->done);
  link_init(&it->node);
  int64_t prev = 0;
  bool timed = timeout_ms > 0;
  if (timed) {
    int64_t until = keel_now_ns() + MS(timeout_ms);
    prev = keel_task_set_deadline(until);
    if (prev > 0 && prev < until)
      keel_task_set_deadline(prev);
  }
  int rc = 0;
  atomic_fetch_add(&c->refs, 1); /* c stays while this call uses it, handle released or not */
  pthread_mutex_lock(&c->mu);
  if (c->ended) {
    rc = -ESHUTDOWN;
    it->why = "the client has ended";
  } else if (it->kind == IT_REQ && (map_find(c, it->req->id) || tomb_find(c, it->req->id))) {
    rc = -EEXIST;
    it->why = "a request with that id is pending";
  } else {
    it->state = ST_QUEUED;
    link_tail(&c->queue, &it->node);
    ring_data(c);
  }
  pthread_mutex_unlock(&c->mu);
  bool over = rc < 0;
  while (!over) {
    int w = keel_notify_wait(&it->done);
    pthread_mutex_lock(&c->mu);
    if (it->state == ST_DONE) {
      rc = it->result;
      over = true;
    } else if (w < 0) {
      over = true;
      if (it->state == ST_QUEUED)
        link_remove(&it->node);
      else if (it->state == ST_PENDING && map_remove(c, it))
        tomb_add(c, it->req->id);
      it->state = ST_DONE;
      rc = w;
      it->why = w == -ETIMEDOUT ? "timed out" : "cancelled";
      count_failed(c, w);
    }
    pthread_mutex_unlock(&c->mu);
  }
  if (timed)
    keel_task_set_deadline(prev);
  keel_notify_destroy(&it->done);
  unref(c);
  return rc;
}

int keel_wsc_send(keel_wsc_t *c, int opcode, const void *data, size_t len) {
  if (!c || (!data && len))
    return -EINVAL;
  item_t it = {.kind = IT_SEND, .data = data, .len = len, .opcode = opcode};
  return item_run(c, &it, 0);
}

int keel_wsc_request(keel_wsc_t *c, keel_wsc_req_t *r) {
  if (!c || !r || (!r->data && r->len) || (!r->resp && r->resp_cap))
    return -EINVAL;
  r->resp_len = 0;
  r->epoch = 0;
  r->sends = 0;
  r->why = NULL;
  item_t it = {.kind = IT_REQ, .req = r, .data = r->data, .len = r->len, .opcode = r->opcode};
  int64_t t = r->timeout_ms ? r->timeout_ms : c->o.request_timeout_ms;
  int rc = item_run(c, &it, t < 0 ? 0 : t);
  if (rc < 0)
    r->why = it.why;
  return rc;
}

/* ---- Subscriptions ---------------------------------------------------------------------- */

int keel_wsc_subscribe(keel_wsc_t *c, const char *topic, keel_wsc_sub_t **out) {
  if (!c || !topic || !*topic || !out)
    return -EINVAL;
  size_t len = strlen(topic);
  keel_wsc_sub_t *s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->cap = c->o.sub_capacity;
  s->slots = calloc(s->cap, sizeof *s->slots);
  topic_t *fresh = malloc(sizeof *fresh + len + 1);
  if (!s->slots || !fresh) {
    free(s->slots);
    free(s);
    free(fresh);
    return -ENOMEM;
  }
  keel_notify_init(&s->avail);
  s->c = c;
  s->live = true;
  pthread_mutex_lock(&c->mu);
  if (c->ended) {
    pthread_mutex_unlock(&c->mu);
    keel_notify_destroy(&s->avail);
    free(s->slots);
    free(s);
    free(fresh);
    return -ESHUTDOWN;
  }
  topic_t *t = topic_find(c, topic, len);
  if (!t) {
    t = fresh;
    fresh = NULL;
    memset(t, 0, sizeof *t);
    memcpy(t->name, topic, len + 1);
    t->len = len;
    link_init(&t->guards);
    t->dirty.prev = t->dirty.next = NULL;
    if (c->ntopics >= c->topics_size)
      topics_grow(c);
    size_t slot = name_slot(c, t->name, len);
    t->hnext = c->topics[slot];
    c->topics[slot] = t;
    c->ntopics++;
  }
  s->t = t;
  link_tail(&t->guards, &s->node);
  t->nguards++;
  if (t->live++ == 0) {
    mark_dirty(c, t);
    ring_data(c);
  }
  atomic_fetch_add(&c->refs, 1);
  pthread_mutex_unlock(&c->mu);
  free(fresh);
  *out = s;
  return 0;
}

/* Under mu. */
static void sub_unlive(keel_wsc_t *c, keel_wsc_sub_t *s) {
  if (!s->live)
    return;
  s->live = false;
  if (--s->t->live == 0 && !c->ended) {
    mark_dirty(c, s->t);
    ring_data(c);
  }
}

int keel_wsc_unsubscribe(keel_wsc_sub_t *s) {
  if (!s)
    return -EINVAL;
  keel_wsc_t *c = s->c;
  pthread_mutex_lock(&c->mu);
  int rc = s->live ? 0 : -EALREADY;
  sub_unlive(c, s);
  keel_notify_all(&s->avail);
  pthread_mutex_unlock(&c->mu);
  return rc;
}

void keel_wsc_sub_release(keel_wsc_sub_t *s) {
  if (!s)
    return;
  keel_wsc_t *c = s->c;
  pthread_mutex_lock(&c->mu);
  sub_unlive(c, s);
  link_remove(&s->node);
  topic_t *t = s->t;
  if (--t->nguards == 0 && c->ended) { /* no owner to do it */
    topic_unlink(c, t);
    free(t);
  } else if (t->nguards == 0) {
    mark_dirty(c, t); /* the owner frees it (after the unsubscribe, if one is due) */
  }
  pthread_mutex_unlock(&c->mu);
  for (size_t i = 0; i < s->cap; i++)
    free(s->slots[i].p);
  free(s->slots);
  keel_notify_destroy(&s->avail);
  free(s);
  unref(c);
}

const char *keel_wsc_sub_topic(const keel_wsc_sub_t *s) { return s ? s->t->name : NULL; }

ssize_t keel_wsc_sub_recv(keel_wsc_sub_t *s, void *buf, size_t cap, keel_wsc_update_t *u) {
  if (!s || (!buf && cap))
    return -EINVAL;
  keel_wsc_t *c = s->c;
  for (;;) {
    pthread_mutex_lock(&c->mu);
    if (s->count > 0) {
      slot_t *sl = &s->slots[s->head];
      s->head = (s->head + 1) % s->cap;
      s->count--;
      ssize_t rc = sl->len <= cap ? (ssize_t)sl->len : -EMSGSIZE;
      if (rc >= 0 && sl->len)
        memcpy(buf, sl->p, sl->len);
      if (u)
        *u = (keel_wsc_update_t){.seq = sl->seq,
                                 .has_seq = sl->has_seq,
                                 .epoch = sl->epoch,
                                 .len = sl->len,
                                 .dropped = s->dropped,
                                 .opcode = sl->opcode};
      pthread_mutex_unlock(&c->mu);
      return rc;
    }
    int end = s->ended ? -ESHUTDOWN : !s->live ? -ENOTCONN : 0;
    pthread_mutex_unlock(&c->mu);
    if (end)
      return end;
    int rc = keel_notify_wait(&s->avail);
    if (rc < 0)
      return rc;
  }
}

/* Under mu: one update into a guard's queue (its slot's buffer grows to
 * the largest update it has held, then is reused). */
static void sub_push(keel_wsc_t *c, keel_wsc_sub_t *s, int opcode, const void *data, size_t len,
                     const keel_wsc_msg_t *m, uint64_t epoch) {
  if (s->count == s->cap) {
    s->dropped++;
    c->st.updates_dropped++;
    count(c->m.updates_dropped, 1);
    if (c->o.sub_overflow == KEEL_WSC_DROP_NEWEST)
      return;
    s->head = (s->head + 1) % s->cap;
    s->count--;
  }
  slot_t *sl = &s->slots[(s->head + s->count) % s->cap];
  if (sl->cap < len) {
    char *p = realloc(sl->p, len);
    if (!p) {
      s->dropped++;
      c->st.updates_dropped++;
      count(c->m.updates_dropped, 1);
      return;
    }
    sl->p = p;
    sl->cap = len;
  }
  if (len)
    memcpy(sl->p, data, len);
  sl->len = len;
  sl->seq = m->seq;
  sl->has_seq = m->has_seq;
  sl->epoch = epoch;
  sl->opcode = opcode;
  s->count++;
  keel_notify_one(&s->avail);
}

/* ---- The owner: writing ------------------------------------------------------------------ */

/* Writes c->out on the connection, within pong_timeout (a peer that reads
 * nothing is a lost connection, not a stuck owner). */
static int write_out(keel_wsc_t *c) {
  int64_t limit = keel_now_ns() + MS(c->o.pong_timeout_ms);
  int64_t prev = keel_task_set_deadline(limit);
  if (prev > 0 && prev < limit)
    keel_task_set_deadline(prev);
  int rc = keel_ws_send(c->ws, c->out.opcode ? c->out.opcode : KEEL_WS_TEXT, c->out.p, c->out.len);
  keel_task_set_deadline(prev);
  if (rc < 0)
    snprintf(c->why, sizeof c->why, "write: %s", keel_strerror(rc));
  return rc;
}

/* Subscribes and unsubscribes what changed (all topics after a connect). */
static int serve_topics(keel_wsc_t *c) {
  for (;;) {
    pthread_mutex_lock(&c->mu);
    if (link_empty(&c->dirty) || c->want_close || c->want_reconnect) {
      pthread_mutex_unlock(&c->mu);
      return 0;
    }
    topic_t *t = CONTAINER(c->dirty.next, topic_t, dirty);
    link_remove(&t->dirty);
    t->dirty.prev = t->dirty.next = NULL;
    int act = 0; /* 1 subscribe, -1 unsubscribe */
    uint64_t from = t->next_seq;
    bool has_from = t->has_seq;
    if (t->live > 0 && !t->subscribed && c->up)
      act = 1;
    else if (t->live == 0 && t->subscribed)
      act = -1;
    if (act)
      t->subscribed = act > 0;
    if (t->live == 0 && t->nguards == 0 && !t->subscribed && act == 0) {
      topic_unlink(c, t);
      pthread_mutex_unlock(&c->mu);
      free(t);
      continue;
    }
    pthread_mutex_unlock(&c->mu);
    if (!act)
      continue;
    out_reset(&c->out);
    int rc = act > 0 ? (c->p.subscribe
                            ? c->p.subscribe(c->p.ctx, t->name, has_from ? &from : NULL, &c->out)
                            : -ENOTSUP)
                     : (c->p.unsubscribe ? c->p.unsubscribe(c->p.ctx, t->name, &c->out) : 0);
    if (rc >= 0 && c->out.len > 0 && (rc = write_out(c)) < 0)
      return rc;
    if (act < 0) { /* may go now, if nothing came back for it meanwhile */
      pthread_mutex_lock(&c->mu);
      if (t->live == 0 && t->nguards == 0 && !link_on(&t->dirty)) {
        topic_unlink(c, t);
        free(t);
      }
      pthread_mutex_unlock(&c->mu);
    }
  }
}

/* Writes what the callers queued, re-checking control between items. */
static int serve_data(keel_wsc_t *c) {
  uint64_t epoch = keel_wsc_epoch(c);
  for (;;) {
    pthread_mutex_lock(&c->mu);
    if (link_empty(&c->queue) || c->want_close || c->want_reconnect) {
      pthread_mutex_unlock(&c->mu);
      return 0;
    }
    item_t *it = CONTAINER(c->queue.next, item_t, node);
    link_remove(&it->node);
    out_reset(&c->out);
    if (keel_wsc_out_append(&c->out, it->data, it->len) < 0) {
      item_done(c, it, -ENOMEM, "no memory");
      pthread_mutex_unlock(&c->mu);
      continue;
    }
    c->out.opcode = it->opcode ? it->opcode : KEEL_WS_TEXT;
    if (it->kind == IT_SEND) {
      item_done(c, it, 0, NULL);
    } else if (map_find(c, it->req->id) || tomb_find(c, it->req->id)) {
      item_done(c, it, -EEXIST, "a request with that id is pending");
      pthread_mutex_unlock(&c->mu);
      continue;
    } else {
      map_add(c, it);
      it->req->epoch = epoch;
      it->req->sends++;
      c->st.requests_sent++;
      if (it->req->sends > 1)
        c->st.resent++;
    }
    pthread_mutex_unlock(&c->mu);
    int rc = write_out(c);
    if (rc < 0)
      return rc;
  }
}

/* ---- The owner: reading ---------------------------------------------------------------- */

static void route_update(keel_wsc_t *c, int opcode, const void *data, size_t len,
                         const keel_wsc_msg_t *m) {
  if (!m->topic)
    return;
  uint64_t epoch = keel_wsc_epoch(c);
  pthread_mutex_lock(&c->mu);
  topic_t *t = topic_find(c, m->topic, m->topic_len);
  if (t) {
    if (m->has_seq && (!t->has_seq || m->seq + 1 > t->next_seq)) {
      t->has_seq = true;
      t->next_seq = m->seq + 1;
    }
    c->st.updates++;
    for (link_t *l = t->guards.next; l != &t->guards; l = l->next) {
      keel_wsc_sub_t *s = CONTAINER(l, keel_wsc_sub_t, node);
      if (s->live)
        sub_push(c, s, opcode, data, len, m, epoch);
    }
  }
  pthread_mutex_unlock(&c->mu);
}

static void complete(keel_wsc_t *c, const void *data, size_t len, const keel_wsc_msg_t *m) {
  pthread_mutex_lock(&c->mu);
  item_t *it = map_find(c, m->id);
  if (!it) {
    tomb_t **pp = tomb_find(c, m->id);
    if (pp) {
      tomb_t *t = *pp;
      *pp = t->next;
      free(t);
      c->ntombs--;
    }
    c->st.responses_dropped++;
    count(c->m.responses_dropped, 1);
    pthread_mutex_unlock(&c->mu);
    return;
  }
  map_remove(c, it);
  keel_wsc_req_t *r = it->req;
  r->resp_len = len;
  int rc = m->error ? -EREMOTEIO : 0;
  if (!r->resp)
    ; /* the caller wants the outcome only */
  else if (len > r->resp_cap)
    rc = -EMSGSIZE;
  else if (len)
    memcpy(r->resp, data, len);
  c->st.responses++;
  item_done(c, it, rc, rc == -EREMOTEIO ? "error answer" : rc ? "response too long" : NULL);
  pthread_mutex_unlock(&c->mu);
}

/* One message read by the owner. Returns 0, or a negative errno that
 * drops the connection (c->why says why). auth: set to 1 / -1 by an auth
 * answer (NULL outside the connect sequence). */
static int dispatch(keel_wsc_t *c, int opcode, const void *data, size_t len, int *auth) {
  keel_wsc_msg_t m = {0};
  int rc = c->p.classify(c->p.ctx, opcode, data, len, &m);
  if (rc < 0) {
    snprintf(c->why, sizeof c->why, "protocol: %s", keel_strerror(rc));
    return rc;
  }
  switch (m.kind) {
  case KEEL_WSC_RESPONSE:
    complete(c, data, len, &m);
    break;
  case KEEL_WSC_UPDATE:
    route_update(c, opcode, data, len, &m);
    break;
  case KEEL_WSC_AUTH_OK:
    if (auth)
      *auth = 1;
    break;
  case KEEL_WSC_AUTH_FAILED:
    if (auth) {
      *auth = -1;
      snprintf(c->why, sizeof c->why, "auth failed%s%.*s", m.reason ? ": " : "",
               m.reason ? (int)(m.reason_len < 120 ? m.reason_len : 120) : 0,
               m.reason ? m.reason : "");
    }
    break;
  case KEEL_WSC_IGNORE:
    break;
  default:
    emit_message(c, m.kind, opcode, data, len);
    break;
  }
  return 0;
}

/* Control, under mu: 1 close, 2 reconnect (why set), 0 none. */
static int control_locked(keel_wsc_t *c) {
  if (c->want_close)
    return 1;
  if (c->want_reconnect) {
    c->want_reconnect = false;
    snprintf(c->why, sizeof c->why, "reconnect: %s", c->reconnect_reason);
    return 2;
  }
  return 0;
}

static int control(keel_wsc_t *c) {
  pthread_mutex_lock(&c->mu);
  int rc = control_locked(c);
  pthread_mutex_unlock(&c->mu);
  return rc;
}

enum { END_CLOSE = 1, END_CANCELLED = 2, END_LOST = 3 };

/* Reads one message with the alert enabled: > 0 its opcode, -EINTR rung,
 * or the end: why set. */
static int read_one(keel_wsc_t *c, const void **data, size_t *len) {
  keel_alert_enable(c->alert);
  int rc = keel_ws_recv(c->ws, data, len);
  keel_alert_disable(c->alert);
  if (rc > 0 || rc == -EINTR)
    return rc;
  if (rc == 0) {
    int code = keel_ws_close_code(c->ws);
    const char *r = keel_ws_close_reason(c->ws);
    snprintf(c->why, sizeof c->why, "closed by the server: %d%s%s", code, r && *r ? " " : "",
             r ? r : "");
    return -ECONNRESET;
  }
  if (keel_cancelled() != KEEL_CANCEL_NONE)
    snprintf(c->why, sizeof c->why, "cancelled");
  else if (rc == -ETIMEDOUT && keel__ws_error(c->ws) == -ETIMEDOUT && !keel_ws_close_sent(c->ws))
    snprintf(c->why, sizeof c->why, "pong timeout");
  else if (rc == -ETIMEDOUT)
    snprintf(c->why, sizeof c->why, "timed out");
  else
    snprintf(c->why, sizeof c->why, "read: %s", keel_strerror(rc));
  return rc;
}

/* Connected and authenticated: serves until the connection ends. */
static int serve(keel_wsc_t *c) {
  for (;;) {
    keel_alert_take(c->alert);
    int ctl = control(c);
    if (ctl == 1)
      return END_CLOSE;
    if (ctl == 2)
      return END_LOST;
    if (serve_topics(c) < 0 || serve_data(c) < 0)
      return keel_cancelled() ? END_CANCELLED : END_LOST;
    if (atomic_load_explicit(&c->ntombs, memory_order_relaxed) &&
        keel_now_ns() >= c->next_sweep) { /* the cleanup pass */
      pthread_mutex_lock(&c->mu);
      tombs_clear(c, false);
      c->next_sweep = keel_now_ns() + MS(c->o.request_timeout_ms);
      pthread_mutex_unlock(&c->mu);
    }
    if (control(c) || keel_alert_pending(c->alert))
      continue;
    const void *data;
    size_t len;
    int rc = read_one(c, &data, &len);
    if (rc == -EINTR)
      continue;
    if (rc < 0)
      return keel_cancelled() ? END_CANCELLED : END_LOST;
    if (dispatch(c, rc, data, len, NULL) < 0)
      return END_LOST;
  }
}

/* ---- The owner: connecting ------------------------------------------------------------- */

static int send_built(keel_wsc_t *c, int rc) {
  if (rc < 0) {
    snprintf(c->why, sizeof c->why, "protocol: %s", keel_strerror(rc));
    return rc;
  }
  return rc > 0 && c->out.len > 0 ? write_out(c) : 0;
}

/* The connect sequence on one socket. 0 when through it (the epoch
 * raised, the topics subscribed again, connected emitted), else END_*. */
static int connect_seq(keel_wsc_t *c) {
  int64_t limit = keel_now_ns() + MS(c->o.connect_timeout_ms);
  int64_t prev = keel_task_set_deadline(limit);
  if (prev > 0 && prev < limit)
    keel_task_set_deadline(prev);
  c->why[0] = '\0';
  c->wso.why = c->why;
  c->wso.why_len = sizeof c->why;
  keel_alert_enable(c->alert); /* only control rings between connections */
  int rc = keel_ws_connect(c->url, &c->wso, &c->ws);
  keel_alert_disable(c->alert);
  keel_task_set_deadline(prev);
  if (rc < 0) {
    c->ws = NULL;
    if (keel_cancelled() != KEEL_CANCEL_NONE)
      return END_CANCELLED;
    if (control(c) == 1)
      return END_CLOSE;
    char tmp[sizeof c->why];
    memcpy(tmp, c->why, sizeof tmp);
    tmp[100] = '\0';
    snprintf(c->why, sizeof c->why, "connect: %s%s%s", keel_strerror(rc), tmp[0] ? ": " : "", tmp);
    return END_LOST;
  }
  pthread_mutex_lock(&c->mu);
  c->st.connects++;
  count(c->m.connects, 1);
  pthread_mutex_unlock(&c->mu);
  uint64_t epoch = keel_wsc_epoch(c) + 1;
  for (unsigned i = 0; c->p.on_connect; i++) {
    out_reset(&c->out);
    int r = c->p.on_connect(c->p.ctx, epoch, i, &c->out);
    if (r == 0)
      break;
    if (send_built(c, r) < 0)
      return keel_cancelled() ? END_CANCELLED : END_LOST;
  }
  out_reset(&c->out);
  int r = c->p.auth ? c->p.auth(c->p.ctx, &c->out) : 0;
  if (send_built(c, r) < 0)
    return keel_cancelled() ? END_CANCELLED : END_LOST;
  if (r > 0) {
    int auth = 0;
    limit = keel_now_ns() + MS(c->o.request_timeout_ms);
    prev = keel_task_set_deadline(limit);
    if (prev > 0 && prev < limit)
      keel_task_set_deadline(prev);
    while (auth == 0) {
      keel_alert_take(c->alert);
      int ctl = control(c);
      if (ctl) {
        keel_task_set_deadline(prev);
        return ctl == 1 ? END_CLOSE : END_LOST;
      }
      const void *data;
      size_t len;
      int op = read_one(c, &data, &len);
      if (op == -EINTR)
        continue;
      if (op < 0 || dispatch(c, op, data, len, &auth) < 0) {
        keel_task_set_deadline(prev);
        if (keel_cancelled() != KEEL_CANCEL_NONE)
          return END_CANCELLED;
        if (op == -ETIMEDOUT)
          snprintf(c->why, sizeof c->why, "auth: no answer in time");
        return END_LOST;
      }
    }
    keel_task_set_deadline(prev);
    if (auth < 0)
      return END_LOST;
  }
  /* Through: a new epoch; every live topic subscribed again on it. */
  pthread_mutex_lock(&c->mu);
  count(c->m.epoch, (int64_t)(epoch - keel_wsc_epoch(c)));
  atomic_store_explicit(&c->epoch, epoch, memory_order_release);
  if (epoch > 1) {
    c->st.reconnects++;
    count(c->m.reconnects, 1);
  }
  c->up = true;
  for (size_t i = 0; i < c->topics_size; i++)
    for (topic_t *t = c->topics[i]; t; t = t->hnext) {
      t->subscribed = false;
      if (t->live > 0)
        mark_dirty(c, t);
    }
  pthread_mutex_unlock(&c->mu);
  c->failures = 0;
  if (serve_topics(c) < 0)
    return keel_cancelled() ? END_CANCELLED : END_LOST;
  emit_life(c, KEEL_WSC_EV_CONNECTED, 0, NULL, 0);
  return 0;
}

/* The connection is gone: requests sent on it fail, except idempotent
 * ones with sends left, which go back to the front of the queue. */
static void lost(keel_wsc_t *c) {
  pthread_mutex_lock(&c->mu);
  c->up = false;
  link_t again;
  link_init(&again);
  for (size_t i = 0; i < c->map_size; i++) {
    for (item_t *it = c->map[i], *next; it; it = next) {
      next = it->hnext;
      it->hnext = NULL;
      if (it->req->idempotent && it->req->sends <= c->o.resend_limit) {
        it->state = ST_QUEUED;
        link_tail(&again, &it->node);
      } else {
        c->st.requests_failed++;
        item_done(c, it, -ECONNRESET, "disconnected");
      }
    }
    c->map[i] = NULL;
  }
  count(c->m.pending, -(int64_t)c->pending);
  c->pending = 0;
  tombs_clear(c, true);
  while (!link_empty(&again)) {
    link_t *l = again.prev;
    link_remove(l);
    link_head(&c->queue, l);
  }
  for (size_t i = 0; i < c->topics_size; i++)
    for (topic_t *t = c->topics[i]; t; t = t->hnext)
      t->subscribed = false;
  pthread_mutex_unlock(&c->mu);
}

static int64_t backoff_ms(keel_wsc_t *c) {
  double ceil = (double)c->o.backoff_initial_ms;
  for (unsigned i = 1; i < c->failures && ceil < (double)c->o.backoff_max_ms; i++)
    ceil *= c->o.backoff_factor;
  if (ceil > (double)c->o.backoff_max_ms)
    ceil = (double)c->o.backoff_max_ms;
  int64_t top = (int64_t)ceil;
  if (c->o.no_jitter)
    return top;
  return (int64_t)keel_random_below((uint64_t)top + 1);
}

/* Sleeps the backoff, serving control: END_CLOSE / END_CANCELLED, or 0. */
static int backoff_wait(keel_wsc_t *c, int64_t delay_ms) {
  int64_t until = keel_now_ns() + MS(delay_ms);
  for (;;) {
    int ctl = control(c);
    if (ctl == 1)
      return END_CLOSE;
    if (ctl == 2)
      return 0; /* connect now */
    int rc = keel_alert_wait(c->alert, until);
    if (rc < 0)
      return END_CANCELLED;
    if (rc == 0)
      return 0;
  }
}

static void shutdown_all(keel_wsc_t *c) {
  pthread_mutex_lock(&c->mu);
  c->up = false;
  c->ended = true;
  while (!link_empty(&c->queue)) {
    item_t *it = CONTAINER(c->queue.next, item_t, node);
    link_remove(&it->node);
    item_done(c, it, -ESHUTDOWN, "the client has ended");
  }
  for (size_t i = 0; i < c->map_size; i++) {
    for (item_t *it = c->map[i], *next; it; it = next) {
      next = it->hnext;
      it->hnext = NULL;
      item_done(c, it, -ESHUTDOWN, "the client has ended");
    }
    c->map[i] = NULL;
  }
  count(c->m.pending, -(int64_t)c->pending);
  c->pending = 0;
  tombs_clear(c, true);
  for (size_t i = 0; i < c->topics_size; i++)
    for (topic_t *t = c->topics[i], *next; t; t = next) {
      next = t->hnext;
      if (link_on(&t->dirty))
        link_remove(&t->dirty);
      t->dirty.prev = t->dirty.next = NULL;
      for (link_t *l = t->guards.next; l != &t->guards; l = l->next) {
        keel_wsc_sub_t *s = CONTAINER(l, keel_wsc_sub_t, node);
        s->ended = true;
        keel_notify_all(&s->avail);
      }
      if (t->nguards == 0) {
        topic_unlink(c, t);
        free(t);
      }
    }
  pthread_mutex_unlock(&c->mu);
}

static void drop_ws(keel_wsc_t *c, bool graceful) {
  if (!c->ws)
    return;
  keel_shield_begin(keel_now_ns() + MS(1000));
  if (graceful)
    keel_ws_close(c->ws, KEEL_WS_NORMAL, NULL);
  else
    keel_ws_close(c->ws, KEEL_WS_GOING_AWAY, NULL);
  keel_shield_end();
  c->ws = NULL;
}

static int owner_main(void *arg) {
  keel_wsc_t *c = arg;
  keel_alert_t *a;
  if (keel_alert_open(&a) < 0) {
    shutdown_all(c);
    if (c->events)
      keel_chan_shutdown(c->events);
    unref(c);
    return -ENOMEM;
  }
  pthread_mutex_lock(&c->mu);
  c->alert = a;
  pthread_mutex_unlock(&c->mu);
  int end = 0;
  while (end != END_CLOSE && end != END_CANCELLED) {
    end = connect_seq(c);
    bool was_up = end == 0; /* through the connect sequence: a connection lost, not an attempt */
    uint64_t epoch = keel_wsc_epoch(c);
    if (was_up)
      end = serve(c);
    if (end != END_LOST) { /* callers get -ESHUTDOWN, then the close goes out */
      shutdown_all(c);
      drop_ws(c, was_up);
      if (was_up && end == END_CLOSE) {
        keel_wsc_event_t ev = {.type = KEEL_WSC_EV_DISCONNECTED, .epoch = epoch, .delay_ms = -1};
        snprintf(ev.reason, sizeof ev.reason, "closed");
        emit(c, &ev);
      }
      break;
    }
    lost(c);
    drop_ws(c, false);
    c->failures = was_up ? 1 : c->failures + 1;
    pthread_mutex_lock(&c->mu);
    c->st.failures++;
    count(c->m.failures, 1);
    pthread_mutex_unlock(&c->mu);
    int err = was_up ? -ECONNRESET : -ECONNREFUSED;
    bool give_up = c->o.max_attempts && c->failures >= c->o.max_attempts;
    int64_t delay = give_up ? -1 : backoff_ms(c);
    emit_life(c, was_up ? KEEL_WSC_EV_DISCONNECTED : KEEL_WSC_EV_CONNECT_FAILED, err, c->why,
              delay);
    if (give_up) {
      emit_life(c, KEEL_WSC_EV_GAVE_UP, err, c->why, -1);
      break;
    }
    end = backoff_wait(c, delay);
  }
  shutdown_all(c);
  if (c->events) {
    keel_wsc_event_t ev = {.type = KEEL_WSC_EV_CLOSED, .epoch = keel_wsc_epoch(c)};
    ev.at_ns = keel_now_ns();
    (void)keel_chan_try_send(c->events, &ev);
    keel_chan_shutdown(c->events);
  }
  pthread_mutex_lock(&c->mu);
  c->alert = NULL;
  pthread_mutex_unlock(&c->mu);
  keel_alert_close(a);
  unref(c);
  return 0;
}

/* ---- Opening ------------------------------------------------------------------------------ */

int keel_wsc_open(keel_scope_t *scope, const keel_wsc_opts_t *opts, const keel_wsc_proto_t *proto,
                  keel_wsc_t **out) {
  if (!opts || !opts->url || !proto || !proto->classify || !out)
    return -EINVAL;
  if (strncmp(opts->url, "ws://", 5) != 0 && strncmp(opts->url, "wss://", 6) != 0)
    return -EINVAL;
  if (!scope && !(scope = keel_scope_current()))
    return -EINVAL;
  keel_wsc_t *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  pthread_mutex_init(&c->mu, NULL);
  c->o = *opts;
  c->p = *proto;
  if (opts->ws)
    c->wso = *opts->ws;
  keel_wsc_opts_t *o = &c->o;
  if (o->connect_timeout_ms <= 0)
    o->connect_timeout_ms = 10000;
  if (o->request_timeout_ms <= 0)
    o->request_timeout_ms = 10000;
  if (o->ping_interval_ms == 0)
    o->ping_interval_ms = 15000;
  if (o->pong_timeout_ms <= 0)
    o->pong_timeout_ms = 10000;
  if (o->backoff_initial_ms <= 0)
    o->backoff_initial_ms = 500;
  if (o->backoff_max_ms <= 0)
    o->backoff_max_ms = 30000;
  if (o->backoff_max_ms < o->backoff_initial_ms)
    o->backoff_max_ms = o->backoff_initial_ms;
  if (!(o->backoff_factor >= 1.0))
    o->backoff_factor = 2.0;
  if (o->resend_limit == 0)
    o->resend_limit = 3;
  if (o->event_capacity == 0)
    o->event_capacity = 256;
  if (o->sub_capacity == 0)
    o->sub_capacity = 256;
  c->wso.ping_interval_ms = o->ping_interval_ms > 0 ? o->ping_interval_ms : 0;
  c->wso.pong_timeout_ms = o->pong_timeout_ms;
  if (c->wso.close_timeout_ms <= 0 || c->wso.close_timeout_ms > 1000)
    c->wso.close_timeout_ms = 1000; /* a release ends the client within 1 s */
  c->wso.on_message = NULL;
  c->url = strdup(opts->url);
  c->map_size = 64;
  c->map = calloc(c->map_size, sizeof *c->map);
  c->topics_size = 16;
  c->topics = calloc(c->topics_size, sizeof *c->topics);
  link_init(&c->queue);
  link_init(&c->dirty);
  out_reset(&c->out);
  int rc = c->url && c->map && c->topics ? 0 : -ENOMEM;
  if (rc == 0)
    metrics_open(c);
  if (rc == 0 && o->events) {
    keel_chan_opts_t co = {.elem_size = sizeof(keel_wsc_event_t),
                           .capacity = o->event_capacity,
                           .flags = KEEL_CHAN_SHARED};
    rc = keel_chan_open(&co, &c->events);
  }
  if (rc < 0) {
    client_free(c);
    return rc;
  }
  atomic_init(&c->refs, 2); /* the first handle, the owner */
  atomic_init(&c->handles, 1);
  keel_spawn_opts_t so = {.name = o->name ? o->name : "wsc"};
  rc = keel_spawn(scope, owner_main, c, &so);
  if (rc < 0) {
    client_free(c);
    return rc;
  }
  *out = c;
  return 0;
}
