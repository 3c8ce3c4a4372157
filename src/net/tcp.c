/* TCP listeners and connections over the worker's backend. In lab mode
 * the same calls run on the in-memory network (labnet.c): a lab listener
 * or connection is told apart once per call here (a connection by its
 * stream ops), never inside the read and write paths. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics-internal.h"
#include "worker.h"
#include "keel/stream-impl.h"
#include "keel/tcp.h"
#include "tcp-internal.h"

#define ACCEPT_BACKOFF_MIN_MS 10
#define ACCEPT_BACKOFF_MAX_MS 500

_Static_assert(sizeof(keel__pipe_end_t) <= sizeof(keel__io_t),
               "a lab connection must not make a real one larger");

/* ---- Metrics ----------------------------------------------------------------------- */

/* How a connection ended, by what its reads and writes saw last. */
enum { END_LOCAL, END_PEER, END_RESET, END_TIMEOUT, END_ERROR, END_KINDS };
static const char *const end_names[END_KINDS] = {"local", "peer", "reset", "timeout", "error"};

typedef struct net_metrics {
  keel_metric_t *accepted, *connected, *active, *bytes_in, *bytes_out;
  keel_metric_t *closed[END_KINDS];
  keel_metric_t *accept_out_of_fds;
} net_metrics_t;

static void *net_metrics_init(void) {
  net_metrics_t *m = calloc(1, sizeof *m);
  keel_metric_family_t *closed;
  keel_metric_opts_t o = {.type = KEEL_METRIC_COUNTER,
                          .name = "keel_tcp_connections_closed_total",
                          .help = "TCP connections closed, by how they ended (what their last "
                                  "read or write saw: peer = end of stream, reset, timeout = a "
                                  "deadline, error, local = nothing).",
                          .labels = {"reason"}};
  int rc = m ? keel_metrics_register(&o, &closed) : -ENOMEM;
  for (int i = 0; rc == 0 && i < END_KINDS; i++)
    rc = keel_metrics_series(closed, (const char *[]){end_names[i]}, &m->closed[i]);
  if (rc == 0)
    rc = keel_metrics_counter("keel_tcp_connections_accepted_total", "TCP connections accepted.",
                              &m->accepted);
  if (rc == 0)
    rc = keel_metrics_counter("keel_tcp_connections_connected_total",
                              "TCP connections made (outgoing).", &m->connected);
  if (rc == 0)
    rc = keel_metrics_gauge("keel_tcp_connections_active", "TCP connections open.", &m->active);
  if (rc == 0)
    rc = keel_metrics_counter("keel_tcp_received_bytes_total", "Bytes read from TCP connections.",
                              &m->bytes_in);
  if (rc == 0)
    rc = keel_metrics_counter("keel_tcp_sent_bytes_total", "Bytes written to TCP connections.",
                              &m->bytes_out);
  if (rc == 0)
    rc = keel_metrics_counter("keel_tcp_accept_out_of_descriptors_total",
                              "Accepts that found no descriptor (EMFILE, ENFILE, ENOBUFS, ENOMEM) "
                              "and backed off.",
                              &m->accept_out_of_fds);
  if (rc < 0 && m) {
    keel_log(KEEL_LOG_WARN, "TCP metrics: %s", keel_strerror(rc));
    free(m);
    m = NULL;
  }
  return m;
}

static inline net_metrics_t *net_metrics(keel__worker_t *w) {
  return keel__metrics_layer(w, KEEL__METRICS_NET, net_metrics_init);
}

/* What a read or write on c (of worker w) returned says about how the
 * connection may end. -EBADF: c was closed under the call by another task
 * (keel_close wakes it so) and is freed: only w may be touched then. */
static inline void note_result(keel_tcp_t *c, keel__worker_t *w, ssize_t n, bool in) {
  net_metrics_t *m;
  if (KEEL__LIKELY(n > 0)) {
    if ((m = net_metrics(w)) != NULL)
      keel__metric_add(w, in ? m->bytes_in : m->bytes_out, (uint64_t)n);
  } else if (n == -EBADF) {
    return;
  } else if (n == 0 && in) {
    c->end = END_PEER;
  } else if (n == -ECONNRESET || n == -EPIPE) {
    c->end = END_RESET;
  } else if (n == -ETIMEDOUT) {
    c->end = END_TIMEOUT;
  } else if (n < 0 && n != -EAGAIN && n != -ECANCELED && n != -EINTR && n != -EXDEV) {
    c->end = END_ERROR;
  }
}

static void count_open(keel__worker_t *w, bool accepted) {
  net_metrics_t *m = net_metrics(w);
  if (m) {
    keel__metric_add(w, accepted ? m->accepted : m->connected, 1);
    keel__metric_gauge_add(w, m->active, 1);
  }
}

static void count_close(keel_tcp_t *c) {
  keel__worker_t *w = c->io.worker;
  net_metrics_t *m = net_metrics(w);
  if (m) {
    keel__metric_add(w, m->closed[c->end], 1);
    keel__metric_gauge_add(w, m->active, -1);
  }
}

/* ---- Stream ops --------------------------------------------------------------- */

/* A connection belongs to the worker that opened it (its backend state
 * lives there); using it from another worker is refused, not corrupted. */
#define OWNED_HERE(io) KEEL__LIKELY((io)->worker == keel__tls_worker)

static ssize_t tcp_readv(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  keel_tcp_t *c = (keel_tcp_t *)s;
  if (!OWNED_HERE(&c->io))
    return -EXDEV;
  keel__worker_t *w = c->io.worker;
  const keel__backend_ops_t *ops = w->ops;
  ssize_t n = iovcnt == 1 ? ops->recv(&c->io, iov[0].iov_base, iov[0].iov_len)
                          : ops->readv(&c->io, iov, iovcnt);
  note_result(c, w, n, true);
  return n;
}

static ssize_t tcp_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  keel_tcp_t *c = (keel_tcp_t *)s;
  if (!OWNED_HERE(&c->io))
    return -EXDEV;
  keel__worker_t *w = c->io.worker;
  const keel__backend_ops_t *ops = w->ops;
  ssize_t n = iovcnt == 1 ? ops->send(&c->io, iov[0].iov_base, iov[0].iov_len)
                          : ops->writev(&c->io, iov, iovcnt);
  note_result(c, w, n, false);
  return n;
}

static int tcp_shutdown(keel_stream_t *s, int how) {
  keel_tcp_t *c = (keel_tcp_t *)s;
  return shutdown(c->io.fd, how) == 0 ? 0 : -errno;
}

static int tcp_close(keel_stream_t *s) {
  keel_tcp_t *c = (keel_tcp_t *)s;
  if (!OWNED_HERE(&c->io))
    return -EXDEV;
  if (KEEL__UNLIKELY(c->parked))
    return -EBUSY; /* its wait and the task's next call live in c */
  if (c->counted)
    count_close(c);
  c->io.worker->ops->io_close(&c->io);
  int rc = close(c->io.fd) == 0 ? 0 : -errno;
  free(c);
  return rc;
}

static int sock_name(int fd, keel_addr_t *out, bool peer);

static int tcp_wait_readable(keel_stream_t *s) {
  keel_tcp_t *c = (keel_tcp_t *)s;
  if (!OWNED_HERE(&c->io))
    return -EXDEV;
  int rc = keel__check_cancel();
  if (rc < 0)
    return rc;
  const keel__backend_ops_t *ops = c->io.worker->ops;
  keel__wait_t w;
  ops->arm_readable(&c->io, &w);
  keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
  return ops->readable_done(&c->io, &w);
}

static bool is_lab(const keel_tcp_t *c);

/* The wait's result is for fn's first call to find: a read repeats it. */
static void park_done(keel__restart_t *r) {
  keel_tcp_t *c = r->owner;
  c->parked = false;
  if (is_lab(c))
    (void)keel__pipe_readable_done(&c->lab, &r->wait);
  else
    (void)c->io.worker->ops->readable_done(&c->io, &r->wait);
}

int keel_tcp_park(keel_tcp_t *c, keel_task_fn fn, void *arg) {
  keel_task_t *t = keel__task_self();
  if (!t || !fn)
    return -EINVAL;
  keel__worker_t *owner = is_lab(c) ? c->lab.pipe->worker : c->io.worker;
  if (owner != keel__tls_worker)
    return -EXDEV;
  if (t->shield_depth > 0 || !keel__queue_empty(&t->stack->open_scopes) || c->parked)
    return -EBUSY; /* they live on the stack it would give up; one park at a time */
  c->parked = true;
  if (is_lab(c))
    keel__pipe_arm_readable(&c->lab, &c->park.wait);
  else
    owner->ops->arm_readable(&c->io, &c->park.wait);
  c->park.hook = park_done;
  c->park.owner = c;
  keel__task_restart_after(&c->park, fn, arg);
}

static int tcp_query(keel_stream_t *s, int what, void *arg, size_t len) {
  keel_tcp_t *c = (keel_tcp_t *)s;
  int *iarg = arg;
  socklen_t ilen = sizeof *iarg;
  switch (what) {
  case KEEL_STREAM_Q_FD:
    *iarg = c->io.fd;
    return 0;
  case KEEL_STREAM_Q_WORKER:
    *iarg = c->io.worker->id;
    return 0;
  case KEEL_STREAM_Q_PEER_ADDR:
  case KEEL_STREAM_Q_LOCAL_ADDR:
    if (len != sizeof(keel_addr_t))
      return -EINVAL;
    return sock_name(c->io.fd, arg, what == KEEL_STREAM_Q_PEER_ADDR);
  case KEEL_STREAM_Q_NODELAY:
    return getsockopt(c->io.fd, IPPROTO_TCP, TCP_NODELAY, iarg, &ilen) == 0 ? 0 : -errno;
  case KEEL_STREAM_Q_SET_NODELAY:
    return keel_tcp_set_nodelay(c, *iarg != 0);
  default:
    return -ENOTSUP;
  }
}

static const keel_stream_ops_t tcp_stream_ops = {
    .name = "tcp",
    .query = tcp_query,
    .wait_readable = tcp_wait_readable,
    .readv = tcp_readv,
    .writev = tcp_writev,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
};

static keel_tcp_t *tcp_new(int fd) {
  keel_tcp_t *c = malloc(sizeof *c);
  if (!c)
    return NULL;
  keel_stream_init(&c->super, &tcp_stream_ops, NULL);
  keel__io_init(&c->io, fd);
  c->parked = false;
  c->counted = false;
  c->end = END_LOCAL;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return c;
}

/* A lab connection has labnet.c's ops. */
static bool is_lab(const keel_tcp_t *c) { return KEEL__UNLIKELY(c->super.ops != &tcp_stream_ops); }

keel_stream_t *keel_tcp_stream(keel_tcp_t *c) { return &c->super; }
int keel_tcp_fd(const keel_tcp_t *c) { return is_lab(c) ? -1 : c->io.fd; }
int keel_tcp_close(keel_tcp_t *c) { return c ? c->super.ops->close(&c->super) : 0; }

int keel_tcp_set_nodelay(keel_tcp_t *c, bool on) {
  if (is_lab(c))
    return 0; /* nothing is held back in lab mode */
  int v = on;
  return setsockopt(c->io.fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0 ? 0 : -errno;
}

static int sock_name(int fd, keel_addr_t *out, bool peer) {
  out->len = sizeof out->ss;
  int rc = peer ? getpeername(fd, (struct sockaddr *)&out->ss, &out->len)
                : getsockname(fd, (struct sockaddr *)&out->ss, &out->len);
  return rc == 0 ? 0 : -errno;
}

int keel_tcp_local_addr(const keel_tcp_t *c, keel_addr_t *out) {
  return is_lab(c) ? keel__labnet_tcp_addr(c, out, false) : sock_name(c->io.fd, out, false);
}
int keel_tcp_peer_addr(const keel_tcp_t *c, keel_addr_t *out) {
  return is_lab(c) ? keel__labnet_tcp_addr(c, out, true) : sock_name(c->io.fd, out, true);
}

/* ---- Listen and accept ----------------------------------------------------------- */

static int listen_socket(const keel_addr_t *addr, const keel_listen_opts_t *o) {
  int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (!o->no_reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
    goto fail;
  if (addr->ss.ss_family == AF_INET6) {
    int v6only = o->v6only;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  }
  if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0)
    goto fail;
  if (listen(fd, o->backlog > 0 ? o->backlog : KEEL_LISTEN_BACKLOG) < 0)
    goto fail;
  return fd;
fail:;
  int err = -errno;
  close(fd);
  return err;
}

int keel_tcp_listen(const char *hostport, const keel_listen_opts_t *opts, keel_listener_t **out) {
  static const keel_listen_opts_t defaults = {0};
  if (!opts)
    opts = &defaults;
  keel__worker_t *w = keel__worker_current();
  if (!w)
    return -EINVAL;
  keel_addr_t addr;
  int rc = keel_addr_resolve(hostport, &addr, 1);
  if (rc < 0)
    return rc;
  if (KEEL__UNLIKELY(w->virtual_time))
    return keel__labnet_listen(&addr, opts, out);
  int fd = listen_socket(&addr, opts);
  if (fd < 0)
    return fd;
  keel_listener_t *l = calloc(1, sizeof *l);
  if (!l) {
    close(fd);
    return -ENOMEM;
  }
  keel__io_init(&l->io, fd);
  l->io.acceptq = &l->acceptq;
  l->acceptq.fd = fd;
  keel__queue_init(&l->acceptq.waiters);
  keel__queue_init(&l->backoff_waiters);
  *out = l;
  return 0;
}

static bool accept_transient(int err) {
  /* The connection died before we took it, or a signal: try the next. */
  return err == -ECONNABORTED || err == -EINTR || err == -EPROTO || err == -EPERM ||
         err == -ENETDOWN || err == -ENOPROTOOPT || err == -EHOSTDOWN || err == -ENONET ||
         err == -EHOSTUNREACH || err == -EOPNOTSUPP || err == -ENETUNREACH;
}

/* Out of descriptors: the pending connection stays in the kernel's backlog.
 * Log (at most once a second) and back off instead of spinning on it. */
static int accept_backoff(keel_listener_t *l, int err, int64_t *backoff_ms) {
  int64_t now = keel__now_ns();
  if (now - l->last_emfile_log_ns >= KEEL_NS_PER_SEC) {
    l->last_emfile_log_ns = now;
    keel_log(KEEL_LOG_WARN, "accept: %s (%s); backing off %lld ms",
             err == -EMFILE ? "EMFILE" : "ENFILE", keel_strerror(err), (long long)*backoff_ms);
  }
  /* Sleep where keel_listener_close can wake us (-EBADF): the listener
   * may be freed while we sleep. */
  int rc = keel__check_cancel();
  if (rc)
    return rc;
  keel__wait_t w;
  keel__wait_init(&w, keel__wait_abort_dequeue, KEEL__WAIT_ACCEPT_BACKOFF, l);
  keel__wait_on_fd(&w, l->io.fd);
  keel__queue_insert_tail(&l->backoff_waiters, &w.node);
  rc = (int)keel__wait_block(&w, now + *backoff_ms * KEEL_NS_PER_MS, 0);
  keel__queue_remove(&w.node);
  if (rc < 0)
    return rc;
  *backoff_ms *= 2;
  if (*backoff_ms > ACCEPT_BACKOFF_MAX_MS)
    *backoff_ms = ACCEPT_BACKOFF_MAX_MS;
  return rc;
}

bool keel_tcp_accept_error_transient(int err) {
  switch (err) {
  case -ECONNABORTED:
  case -EPROTO:
  case -EPERM:
  case -EINTR:
  case -EAGAIN:
  case -ENOBUFS:
  case -ENOMEM:
  case -ENETDOWN:
  case -ENONET:
  case -EHOSTUNREACH:
  case -EHOSTDOWN:
  case -ENETUNREACH:
  case -EOPNOTSUPP:
    return true;
  default:
    return false;
  }
}

int keel_tcp_accept(keel_listener_t *l, keel_tcp_t **out) {
  if (!OWNED_HERE(&l->io))
    return -EXDEV;
  if (KEEL__UNLIKELY(l->io.worker->virtual_time))
    return keel__labnet_accept(l, out);
  int64_t backoff_ms = ACCEPT_BACKOFF_MIN_MS;
  for (;;) {
    int fd = l->io.worker->ops->accept(&l->io);
    if (fd >= 0) {
      keel_tcp_t *c = tcp_new(fd);
      if (!c) {
        close(fd);
        return -ENOMEM;
      }
      count_open(l->io.worker, true);
      c->counted = true;
      *out = c;
      return 0;
    }
    if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
      net_metrics_t *m = net_metrics(l->io.worker);
      if (m)
        keel__metric_add(l->io.worker, m->accept_out_of_fds, 1);
      int rc = accept_backoff(l, fd, &backoff_ms);
      if (rc < 0)
        return rc;
      continue;
    }
    if (!accept_transient(fd))
      return fd;
    int rc = keel__check_cancel(); /* a storm of dead connections stays cancellable */
    if (rc)
      return rc;
  }
}

int keel_listener_addr(const keel_listener_t *l, keel_addr_t *out) {
  if (l->io.worker->virtual_time) {
    *out = l->lab.addr;
    return 0;
  }
  return sock_name(l->io.fd, out, false);
}

int keel_listener_close(keel_listener_t *l) {
  if (!l)
    return 0;
  if (!OWNED_HERE(&l->io))
    return -EXDEV;
  if (l->io.worker->virtual_time)
    return keel__labnet_listener_close(l);
  keel__waiters_wake_all(&l->backoff_waiters, -EBADF);
  l->io.worker->ops->io_close(&l->io);
  int rc = close(l->io.fd) == 0 ? 0 : -errno;
  free(l);
  return rc;
}

/* ---- Connect ----------------------------------------------------------------------- */

int keel_tcp_connect_addr(const keel_addr_t *addr, keel_tcp_t **out) {
  keel__worker_t *w = keel__worker_current();
  if (!w)
    return -EINVAL;
  if (KEEL__UNLIKELY(w->virtual_time))
    return keel__labnet_connect(addr, out);
  int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  keel_tcp_t *c = tcp_new(fd);
  if (!c) {
    close(fd);
    return -ENOMEM;
  }
  int rc = c->io.worker->ops->connect(&c->io, (const struct sockaddr *)&addr->ss, addr->len);
  if (rc < 0) {
    tcp_close(&c->super);
    return rc;
  }
  count_open(c->io.worker, false);
  c->counted = true;
  *out = c;
  return 0;
}

int keel_tcp_connect(const char *hostport, keel_tcp_t **out) {
  keel_addr_t addr;
  if (keel_addr_parse(hostport, &addr) == 0)
    return keel_tcp_connect_addr(&addr, out);
  keel_addr_t addrs[KEEL_RESOLVE_MAX];
  int n = keel_addr_resolve(hostport, addrs, KEEL_RESOLVE_MAX);
  if (n < 0)
    return n;
  int rc = -ENOENT;
  for (int i = 0; i < n; i++) {
    rc = keel_tcp_connect_addr(&addrs[i], out);
    if (rc == 0 || rc == -ECANCELED || rc == -ETIMEDOUT)
      break;
  }
  return rc;
}
