/* The client's connection pools: one per worker and client (no lock: a
 * pool is touched by its worker only), origins in it, idle connections,
 * and the worker's free read buffers and call arenas.
 *
 * A permit of the origin's semaphore is the right to hold a connection:
 * a call takes one, then an idle connection or a new one, and gives it
 * back when its response has ended. So busy + idle never passes
 * max_per_origin, and callers that find every connection busy queue in
 * FIFO order under their own deadlines.
 *
 * Idle connections are not watched (a watcher task per connection would
 * keep the runtime from ending, and the default pool lives as long as the
 * runtime): each is checked without waiting when it is taken
 * (keel__tcp_readable_now), and the expired ones are closed as the pool
 * is used, at most once a second. The default pool lives in a worker
 * slot; what it holds when the runtime ends is freed with the worker. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <stdio.h>
#include <strings.h>

#include "client-internal.h"
#include "tcp-pool-internal.h"
#include "tls-internal.h"
#include "worker.h"

#define CONN_OF_NODE(q) keel__container_of(q, hc_conn_t, node)
#define CONN_OF_LRU(q) keel__container_of(q, hc_conn_t, lru)
#define ORIGIN_OF(q) keel__container_of(q, hc_origin_t, node)

/* Inserting before the first element puts q at the head. */
static void insert_head(keel__queue_t *h, keel__queue_t *q) { keel__queue_insert_tail(h->next, q); }

/* ---- Settings ------------------------------------------------------------- */

static int64_t ms_or(int64_t ms, int64_t dflt_ms) {
  if (ms < 0)
    return 0;
  return (ms ? ms : dflt_ms) * KEEL_NS_PER_MS;
}

static void limits(const keel_http_client_opts_t *o, hc_limits_t *lim) {
  keel_http_client_opts_t zero = {0};
  if (!o)
    o = &zero;
  lim->max_per_origin = o->max_conns_per_origin ? o->max_conns_per_origin : 8;
  lim->max_idle = o->max_idle ? o->max_idle : 64;
  lim->idle_timeout_ns = ms_or(o->idle_timeout_ms, 30000);
  lim->expect_timeout_ns = ms_or(o->expect_timeout_ms, 1000);
  lim->max_header_bytes =
      o->max_header_bytes ? o->max_header_bytes : KEEL_HTTP_CLIENT_DEFAULT_MAX_HEADER_BYTES;
  lim->max_headers = o->max_headers ? o->max_headers : 100;
  lim->max_body = o->max_body ? o->max_body : KEEL_HTTP_CLIENT_DEFAULT_MAX_BODY;
  lim->no_retry = o->no_retry;
  lim->tls = o->tls;
  lim->resolve = o->resolve;
}

/* ---- Buffers and arenas ------------------------------------------------- */

char *keel__hc_buf_take(hc_pool_t *p) {
  return p->nbufs > 0 ? p->bufs[--p->nbufs] : malloc(HC_BUF_SIZE);
}

void keel__hc_buf_give(hc_pool_t *p, char *buf) {
  if (p->nbufs < HC_BUF_CACHE)
    p->bufs[p->nbufs++] = buf;
  else
    free(buf);
}

keel_arena_t *keel__hc_arena_take(hc_pool_t *p) {
  if (p->narenas > 0)
    return p->arenas[--p->narenas];
  keel_arena_opts_t ao = {.chunk_size = HC_ARENA_CHUNK};
  keel_arena_t *a;
  return keel_arena_open(&ao, &a) == 0 ? a : NULL;
}

void keel__hc_arena_give(hc_pool_t *p, keel_arena_t *a) {
  keel_arena_reset(a);
  if (p->narenas < HC_ARENA_CACHE && !p->closing)
    p->arenas[p->narenas++] = a;
  else
    keel_arena_close(a);
}

/* ---- Pools ---------------------------------------------------------------- */

static hc_pool_t *pool_new(const hc_limits_t *lim) {
  hc_pool_t *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->lim = *lim;
  keel__queue_init(&p->origins);
  keel__queue_init(&p->idle);
  return p;
}

/* Frees what the pool holds but its connections. */
static void pool_free_rest(hc_pool_t *p) {
  while (!keel__queue_empty(&p->origins)) {
    hc_origin_t *o = ORIGIN_OF(p->origins.next);
    keel__queue_remove(&o->node);
    keel_sem_destroy(&o->permits);
    free(o);
  }
  for (int i = 0; i < p->nbufs; i++)
    free(p->bufs[i]);
  for (int i = 0; i < p->narenas; i++)
    keel_arena_close(p->arenas[i]);
  keel_tls_ctx_close(p->own_tls);
  free(p);
}

/* The default pool's slot: the worker's loop has ended, no task runs. */
static void pool_destroy_stopped(keel__worker_t *w, void *state) {
  (void)w;
  hc_pool_t *p = state;
  while (!keel__queue_empty(&p->idle)) {
    hc_conn_t *c = CONN_OF_LRU(p->idle.next);
    keel__queue_remove(&c->lru);
    if (c->tls)
      keel__tls_free_stopped(c->tls);
    if (!c->lab)
      keel__tcp_free_stopped(c->tcp);
    free(c);
  }
  pool_free_rest(p);
}

hc_pool_t *keel__hc_pool_get(keel_http_client_t *client) {
  keel__worker_t *w = keel__worker_current();
  if (!w)
    return NULL;
  if (client) {
    if (!client->pools[w->id])
      client->pools[w->id] = pool_new(&client->lim);
    return client->pools[w->id];
  }
  keel__slot_t *slot = &w->slots[KEEL__SLOT_HTTP_CLIENT];
  if (!slot->state) {
    hc_limits_t lim;
    limits(NULL, &lim);
    slot->state = pool_new(&lim);
    slot->destroy = slot->state ? pool_destroy_stopped : NULL;
  }
  return slot->state;
}

/* ---- Connections ---------------------------------------------------------- */

static void conn_close(hc_conn_t *c) {
  hc_pool_t *p = c->origin->pool;
  if (c->buf)
    keel__hc_buf_give(p, c->buf);
  keel_close(c->s);
  free(c);
}

/* Takes an idle connection out of the lists. */
static void idle_remove(hc_conn_t *c) {
  keel__queue_remove(&c->node);
  keel__queue_remove(&c->lru);
  c->origin->nidle--;
  c->origin->pool->nidle--;
}

/* Closes an idle connection; its origin may go with it. */
static void idle_close(hc_conn_t *c) {
  hc_origin_t *o = c->origin;
  idle_remove(c);
  o->users++; /* keeps o while the close may park */
  conn_close(c);
  keel__hc_origin_put(o);
}

/* Closes the idle connections past their deadline (every one: all). A
 * close may park, and the list may change meanwhile: each close starts
 * the walk again. */
static void pool_prune(hc_pool_t *p, bool all) {
  int64_t now = keel_now_ns();
  if (!all && now < p->next_prune)
    return;
  p->next_prune = now + HC_PRUNE_NS;
  for (bool again = true; again;) {
    again = false;
    for (keel__queue_t *q = p->idle.next; q != &p->idle; q = q->next) {
      hc_conn_t *c = CONN_OF_LRU(q);
      if (all || c->idle_deadline <= now) {
        idle_close(c);
        again = true;
        break;
      }
    }
  }
}

/* Where to connect: o->hostport, or the address a "host:port:address"
 * entry of the client's resolve list gives for it. */
static const char *connect_target(const hc_origin_t *o, char *buf, size_t len) {
  const char *const *r = o->pool->lim.resolve;
  for (; r && *r; r++) {
    const char *colon = strchr(*r, ':');
    if (!colon || (size_t)(colon - *r) != o->host_len || strncasecmp(*r, o->host, o->host_len))
      continue;
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end != ':' || port != o->port)
      continue;
    const char *addr = end + 1;
    bool v6 = strchr(addr, ':') && addr[0] != '[';
    if (snprintf(buf, len, v6 ? "[%s]:%u" : "%s:%u", addr, o->port) < (int)len)
      return buf;
  }
  return o->hostport;
}

/* The TLS context for https: the user's, or the pool's own (made on
 * first use: OpenSSL's default CA paths, ALPN http/1.1, sessions kept). */
static int pool_tls(hc_pool_t *p, keel_tls_ctx_t **out, char *why, size_t why_len) {
  if (p->lim.tls) {
    *out = p->lim.tls;
    return 0;
  }
  if (!p->own_tls) {
    static const char *const alpn[] = {"http/1.1", NULL};
    keel_tls_ctx_opts_t to = {.alpn = alpn};
    int rc = keel_tls_ctx_open(&to, &p->own_tls, why, why_len);
    if (rc < 0)
      return rc;
  }
  *out = p->own_tls;
  return 0;
}

int keel__hc_default_tls(keel_tls_ctx_t **out, char *why, size_t why_len) {
  hc_pool_t *p = keel__hc_pool_get(NULL);
  return p ? pool_tls(p, out, why, why_len) : -EINVAL;
}

/* TLS over the new connection, its handshake done: the server verified
 * as o->host, the session cached under o->hostport (for resumption). */
static int conn_tls(hc_conn_t *c, char *why, size_t why_len) {
  hc_origin_t *o = c->origin;
  keel_tls_ctx_t *ctx;
  int rc = pool_tls(o->pool, &ctx, why, why_len);
  if (rc < 0)
    return rc;
  keel_tls_opts_t to = {.server_name = o->host, .session_key = o->hostport};
  if ((rc = keel_tls_open(ctx, c->s, &to, &c->tls)) < 0)
    return rc;
  c->s = keel_tls_stream(c->tls);
  rc = keel_tls_handshake(c->tls);
  if (rc < 0 && why && why_len)
    snprintf(why, why_len, "%s", keel_tls_reason(c->tls));
  return rc;
}

static int conn_open(hc_origin_t *o, hc_conn_t **out, char *why, size_t why_len) {
  hc_conn_t *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  char target[300];
  int rc = keel_tcp_connect(connect_target(o, target, sizeof target), &c->tcp);
  if (rc < 0) {
    free(c);
    return rc;
  }
  c->origin = o;
  c->s = keel_tcp_stream(c->tcp);
  c->lab = keel_tcp_fd(c->tcp) < 0;
  if (o->tls && (rc = conn_tls(c, why, why_len)) < 0) {
    keel_close(c->s);
    free(c);
    return rc;
  }
  *out = c;
  return 0;
}

/* An idle connection may carry a request: not expired, nothing to read
 * (in the socket, or buffered by the TLS layer). */
static bool conn_alive(hc_conn_t *c, int64_t now) {
  return c->idle_deadline > now && keel__tcp_readable_now(c->tcp) == 0 &&
         (!c->tls || keel_tls_idle(c->tls) == 0);
}

int keel__hc_conn_get(hc_origin_t *o, bool fresh, hc_conn_t **out, bool *reused, char *why,
                      size_t why_len) {
  hc_pool_t *p = o->pool;
  pool_prune(p, false);
  int64_t now = keel_now_ns();
  while (!fresh && !keel__queue_empty(&o->idle)) {
    hc_conn_t *c = CONN_OF_NODE(o->idle.next);
    idle_remove(c);
    if (!conn_alive(c, now)) {
      conn_close(c);
      continue;
    }
    c->buf = keel__hc_buf_take(p);
    if (!c->buf) {
      conn_close(c);
      return -ENOMEM;
    }
    *out = c;
    *reused = true;
    return 0;
  }
  hc_conn_t *c;
  int rc = conn_open(o, &c, why, why_len);
  if (rc < 0)
    return rc;
  c->buf = keel__hc_buf_take(p);
  if (!c->buf) {
    conn_close(c);
    return -ENOMEM;
  }
  *out = c;
  *reused = false;
  return 0;
}

void keel__hc_conn_put(hc_conn_t *c, bool keep, int64_t idle_ns) {
  hc_origin_t *o = c->origin;
  hc_pool_t *p = o->pool;
  if (!keep || idle_ns <= 0 || c->len > 0 || p->closing || (c->tls && keel_tls_idle(c->tls) < 0)) {
    conn_close(c);
    return;
  }
  keel__hc_buf_give(p, c->buf);
  c->buf = NULL;
  c->head = c->len = 0;
  c->idle_deadline = keel_now_ns() + idle_ns;
  insert_head(&o->idle, &c->node);
  keel__queue_insert_tail(&p->idle, &c->lru);
  o->nidle++;
  if (++p->nidle > p->lim.max_idle)
    idle_close(CONN_OF_LRU(p->idle.next));
}

/* ---- Origins -------------------------------------------------------------- */

static char lower(char ch) { return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch; }

static bool origin_is(const hc_origin_t *o, const hc_url_t *u) {
  if (o->tls != u->tls || o->port != u->port || o->host_len != u->host_len)
    return false;
  for (size_t i = 0; i < u->host_len; i++)
    if (o->host[i] != lower(u->host[i]))
      return false;
  return true;
}

static hc_origin_t *origin_new(hc_pool_t *p, const hc_url_t *u) {
  size_t room = u->host_len + 16;
  hc_origin_t *o = calloc(1, sizeof *o + room + u->host_len + 1);
  if (!o)
    return NULL;
  o->pool = p;
  o->tls = u->tls;
  o->port = u->port;
  o->host_len = u->host_len;
  o->host = o->hostport + room;
  for (size_t i = 0; i < u->host_len; i++)
    o->host[i] = lower(u->host[i]);
  o->host[u->host_len] = '\0';
  size_t n = 0;
  if (u->ipv6)
    o->hostport[n++] = '[';
  memcpy(o->hostport + n, o->host, u->host_len);
  n += u->host_len;
  if (u->ipv6)
    o->hostport[n++] = ']';
  o->hostport[n++] = ':';
  char digits[8];
  int nd = 0;
  for (unsigned v = u->port; v; v /= 10)
    digits[nd++] = (char)('0' + v % 10);
  while (nd)
    o->hostport[n++] = digits[--nd];
  o->hostport[n] = '\0';
  keel__queue_init(&o->idle);
  keel_sem_init(&o->permits, p->lim.max_per_origin);
  return o;
}

int keel__hc_origin_get(hc_pool_t *p, const hc_url_t *u, hc_origin_t **out) {
  hc_origin_t *o = NULL;
  for (keel__queue_t *q = p->origins.next; q != &p->origins; q = q->next)
    if (origin_is(ORIGIN_OF(q), u)) {
      o = ORIGIN_OF(q);
      keel__queue_remove(&o->node);
      break;
    }
  if (!o && !(o = origin_new(p, u)))
    return -ENOMEM;
  insert_head(&p->origins, &o->node);
  o->users++;
  *out = o;
  return 0;
}

void keel__hc_origin_put(hc_origin_t *o) {
  if (--o->users > 0 || o->nidle > 0)
    return;
  keel__queue_remove(&o->node);
  keel_sem_destroy(&o->permits);
  free(o);
}

/* ---- Clients -------------------------------------------------------------- */

int keel_http_client_open(const keel_http_client_opts_t *opts, keel_http_client_t **out) {
  *out = NULL;
  int n = keel_worker_count();
  if (n <= 0 || keel_worker_id() < 0)
    return -EINVAL;
  keel_http_client_t *c = calloc(1, sizeof *c + (size_t)n * sizeof c->pools[0]);
  if (!c)
    return -ENOMEM;
  limits(opts, &c->lim);
  c->nworkers = n;
  *out = c;
  return 0;
}

void keel__hc_pool_call_done(hc_pool_t *p) {
  if (--p->calls == 0 && p->closing)
    pool_free_rest(p);
}

/* On the pool's worker: closes its idle connections; the pool goes now or
 * with its last call. */
static int pool_close_task(void *arg) {
  hc_pool_t *p = arg;
  p->closing = true;
  keel_shield_begin(0);
  pool_prune(p, true);
  keel_shield_end();
  if (p->calls == 0)
    pool_free_rest(p);
  return 0;
}

int keel_http_client_close(keel_http_client_t *client) {
  if (!client)
    return 0;
  if (!keel_task_current())
    return -EINVAL;
  keel_scope_t *scope;
  int rc = keel_scope_open(&(keel_scope_opts_t){.flags = KEEL_SCOPE_SHIELD, .name = "http-client"},
                           &scope);
  if (rc < 0)
    return rc;
  for (int i = 0; i < client->nworkers && rc == 0; i++) {
    if (!client->pools[i])
      continue;
    keel_spawn_opts_t so = {.name = "http-client-close", .on_worker = KEEL_WORKER(i)};
    rc = keel_spawn(scope, pool_close_task, client->pools[i], &so);
    if (rc == 0)
      client->pools[i] = NULL;
  }
  keel_scope_close(scope);
  if (rc < 0)
    return rc; /* the pools not handed over stay with the client */
  free(client);
  return 0;
}
