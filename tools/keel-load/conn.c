/* keel-load's connections: connecting under a concurrency limit, then one
 * task per connection running the mode, with failures counted, not fatal. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "load.h"

/* A SYN that is dropped (a full listen backlog) is retried by the kernel
 * for minutes; a connect that takes this long counts as failed instead. */
#define CONNECT_TIMEOUT_NS (10 * KEEL_NS_PER_SEC)
#define MAX_COMPLAINTS 10

void load_complain(load_t *l, uint32_t id, const char *fmt, ...) {
  int n = atomic_fetch_add_explicit(&l->reported, 1, memory_order_relaxed);
  if (n >= MAX_COMPLAINTS)
    return;
  char line[256];
  int len = snprintf(line, sizeof line, "keel-load: conn %u: ", id);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + len, sizeof line - (size_t)len, fmt, ap);
  va_end(ap);
  /* One call per line, so that workers' lines do not interleave. */
  fprintf(stderr, "%s%s\n", line, n + 1 == MAX_COMPLAINTS ? " (further errors not shown)" : "");
}

/* The run is ending: its own stop, or a cancellation (Ctrl-C) that may
 * reach a connection before the timekeeper has noticed. Failures from here
 * on are the interruption, not the server's. */
static bool stopping(const load_t *l) {
  return atomic_load_explicit(&l->stopping, memory_order_relaxed) ||
         keel_cancelled() != KEEL_CANCEL_NONE;
}

void load_pace_start(load_pace_t *p, const load_conn_t *c) {
  p->interval_ns = c->worker->load->opts.interval_ns;
  p->next_ns = keel_now_ns();
  p->phase_ns = 0;
  if (p->interval_ns > 0)
    p->phase_ns = (int64_t)(load_mix64(~(uint64_t)c->id) % (uint64_t)p->interval_ns);
}

int load_pace_wait(load_pace_t *p, int64_t *due_ns) {
  if (p->interval_ns == 0) {
    *due_ns = keel_now_ns();
    return 0;
  }
  *due_ns = p->next_ns;
  p->next_ns += p->interval_ns + p->phase_ns; /* the phase once, after the first */
  p->phase_ns = 0;
  return keel_sleep_until(*due_ns);
}

/* One connection's task: the mode talks until the run is stopped. An
 * error before the stop is counted (a server closing early is one). */
static int conn_task(void *arg) {
  load_conn_t *c = arg;
  load_worker_t *w = c->worker;
  int rc = w->load->mode->run_conn(c);
  if (rc < 0 && !stopping(w->load)) {
    w->errors++;
    load_complain(w->load, c->id, "%s", rc == -EPIPE ? "closed by the server" : keel_strerror(rc));
  }
  keel_tcp_close(c->tcp);
  c->tcp = NULL;
  atomic_fetch_sub_explicit(&w->load->live, 1, memory_order_relaxed);
  return 0; /* counted above: one connection's failure stops no other */
}

static void connect_failed(load_worker_t *w, load_conn_t *c, int err) {
  if (stopping(w->load))
    return; /* cut short, not failed: the run reports it was interrupted */
  w->connect_errors++;
  w->errors++;
  load_complain(w->load, c->id, "connect: %s", keel_strerror(err));
}

/* c's connect under its own deadline (see CONNECT_TIMEOUT_NS). */
static int connect_timed(load_conn_t *c) {
  load_t *l = c->worker->load;
  c->connect_ns = keel_now_ns();
  int64_t prev = keel_task_set_deadline(c->connect_ns + CONNECT_TIMEOUT_NS);
  int rc = keel_tcp_connect_addr(&l->addr, &c->tcp);
  keel_task_set_deadline(prev);
  return rc;
}

int load_reconnect(load_conn_t *c) {
  keel_tcp_close(c->tcp);
  c->tcp = NULL;
  c->worker->reconnects++;
  return connect_timed(c);
}

static void connect_one(load_worker_t *w, load_conn_t *c) {
  load_t *l = w->load;
  /* --connect-rate: connection id starts id gaps after the run did. */
  int rc = keel_sleep_until(l->start_ns + (int64_t)c->id * l->opts.connect_gap_ns);
  if (rc == 0)
    rc = connect_timed(c);
  if (rc == 0) {
    keel_spawn_opts_t so = {.name = "conn"};
    atomic_fetch_add_explicit(&l->live, 1, memory_order_relaxed);
    rc = keel_spawn(w->scope, conn_task, c, &so);
    if (rc < 0)
      atomic_fetch_sub_explicit(&l->live, 1, memory_order_relaxed);
    if (rc < 0) {
      keel_tcp_close(c->tcp);
      c->tcp = NULL;
    }
  }
  if (rc == 0)
    w->established++;
  else
    connect_failed(w, c, rc);
  atomic_fetch_add_explicit(&l->settled, 1, memory_order_relaxed);
}

/* A connector connects the worker's connections one after another; the
 * worker runs `connectors` of them, which bounds its connects in flight
 * without any task waiting for a free slot. */
static int connector_task(void *arg) {
  load_worker_t *w = arg;
  while (w->next_conn < w->nconns)
    connect_one(w, &w->conns[w->next_conn++]);
  return 0;
}

int load_worker_task(void *arg) {
  load_worker_t *w = arg;
  w->backend = keel_backend_name();
  int rc = keel_scope_open(&(keel_scope_opts_t){.name = "conns"}, &w->scope);
  long started = 0;
  while (rc == 0 && started < w->connectors) {
    keel_spawn_opts_t so = {.name = "connector"};
    rc = keel_spawn(w->scope, connector_task, w, &so);
    started += rc == 0;
  }
  if (started == 0) { /* nobody will connect these: they failed */
    while (w->next_conn < w->nconns) {
      connect_failed(w, &w->conns[w->next_conn++], rc);
      atomic_fetch_add_explicit(&w->load->settled, 1, memory_order_relaxed);
    }
  }
  if (w->scope != NULL) {
    keel_scope_join(w->scope); /* connection tasks only ever return 0 */
    keel_scope_close(w->scope);
    w->scope = NULL;
  }
  return 0;
}

/* Cancels a worker's connections from that worker. Cancelling the whole run
 * from the timekeeper would post one interrupt message per connection to
 * the other threads, all at the moment the window closes. */
static int stop_task(void *arg) {
  load_worker_t *w = arg;
  if (w->scope != NULL) /* NULL: its connections have all ended already */
    keel_scope_cancel(w->scope, KEEL_CANCEL_USER);
  return 0;
}

void load_stop(load_t *l, keel_scope_t *scope) {
  atomic_store(&l->stopping, true);
  for (int i = 0; i < l->opts.workers; i++) {
    keel_spawn_opts_t so = {.name = "stop", .on_worker = KEEL_WORKER(l->workers[i]->index)};
    if (keel_spawn(scope, stop_task, l->workers[i], &so) < 0) {
      keel_scope_cancel(scope, KEEL_CANCEL_USER); /* cancelled already, or out of memory */
      return;
    }
  }
}
