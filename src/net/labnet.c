/* Lab mode's in-memory network: keel_tcp_listen, _accept and _connect on
 * a lab runtime. Listeners sit in a table of the runtime's lab state (no
 * globals); a connection is a lab pipe (labpipe-internal.h) whose two ends
 * live in the client's and the server's keel_tcp_t, with the pipe itself
 * in a "link" that also holds the two addresses. Faults are drawn from
 * keel_random, so the seed replays them. Lab mode has one worker, so
 * nothing here is shared between threads. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lab-internal.h"
#include "worker.h"
#include "keel/lab.h"
#include "tcp-internal.h"

/* Ports handed to listeners asked for port 0, then to clients. */
#define LAB_PORT_FIRST 40000
#define LAB_PORT_LAST 49151
#define LAB_EPHEMERAL_FIRST 49152
#define LAB_EPHEMERAL_LAST 65535
/* Host names get addresses of 198.18.0.0/15 (RFC 2544, benchmarking),
 * which no test is likely to write down itself. */
#define LAB_NAME_NET UINT32_C(0xc6120000)
#define LAB_NAME_MAX ((1u << 17) - 2)

/* What the lab network's trace events say (KEEL__LAB_EV_NET). */
enum { NET_EV_LISTEN = 1, NET_EV_CONNECT, NET_EV_ACCEPT, NET_EV_CLOSE };

typedef struct labname {
  keel__queue_t node;
  uint32_t ip; /* host byte order */
  char name[];
} labname_t;

typedef struct labnet {
  keel__queue_t listeners; /* keel__lablistener_t, by node */
  keel__queue_t links;     /* every connection not yet freed */
  keel__queue_t names;     /* host names seen, with their addresses */
  unsigned names_len;
  unsigned next_port;      /* the next port 0 listener tries this port */
  unsigned next_ephemeral; /* the next client gets this port */
  keel_lab_net_faults_t faults;
} labnet_t;

/* One connection: the pipe between the two keel_tcp_t, and what both ends
 * need to know about it. */
typedef struct lablink {
  keel__pipe_t pipe;
  keel_addr_t addr[2];        /* local address of end 0 (client) and 1 (server) */
  keel__queue_t net_node;     /* in labnet.links */
  keel__queue_t pending_node; /* in a listener's pending queue until accepted */
} lablink_t;

static keel_tcp_t *tcp_of(keel__pipe_end_t *e) { return keel__container_of(e, keel_tcp_t, lab); }
static lablink_t *link_of(keel__pipe_t *p) { return keel__container_of(p, lablink_t, pipe); }
static keel_listener_t *listener_of(keel__lablistener_t *lab) {
  return keel__container_of(lab, keel_listener_t, lab);
}

static void net_trace(unsigned what, uint64_t value) {
  keel__worker_t *w = keel__worker_current();
  keel__lab_trace(keel__lab_of(w), KEEL__LAB_EV_NET, what, value);
}

/* ---- The network's state ----------------------------------------------------- */

/* The end of the runtime: no task is left, so nothing is parked anywhere;
 * free what the program left open. */
static void net_free(keel__worker_t *w, void *arg) {
  (void)w;
  labnet_t *net = arg;
  while (!keel__queue_empty(&net->links)) /* each link leaves the list as it goes */
    keel__pipe_destroy(&keel__container_of(net->links.next, lablink_t, net_node)->pipe);
  while (!keel__queue_empty(&net->listeners)) {
    keel__queue_t *n = net->listeners.next;
    keel__queue_remove(n);
    free(listener_of(keel__container_of(n, keel__lablistener_t, node)));
  }
  while (!keel__queue_empty(&net->names)) {
    keel__queue_t *n = net->names.next;
    keel__queue_remove(n);
    free(keel__container_of(n, labname_t, node));
  }
  free(net);
}

/* The calling worker's network, made on first use; NULL outside lab mode
 * or without memory. */
static labnet_t *net_get(void) {
  keel__worker_t *w = keel__worker_current();
  if (!w || !keel__lab_of(w))
    return NULL;
  keel__slot_t *slot = &w->slots[KEEL__SLOT_LABNET];
  if (slot->state)
    return slot->state;
  labnet_t *net = calloc(1, sizeof *net);
  if (!net)
    return NULL;
  keel__queue_init(&net->listeners);
  keel__queue_init(&net->links);
  keel__queue_init(&net->names);
  net->next_port = LAB_PORT_FIRST;
  net->next_ephemeral = LAB_EPHEMERAL_FIRST;
  slot->state = net;
  slot->destroy = net_free;
  return net;
}

int keel_lab_net_faults(const keel_lab_net_faults_t *f) {
  keel__worker_t *w = keel__worker_current();
  keel_lab_net_faults_t none = {0};
  if (!f)
    f = &none;
  if (!w || !keel__lab_of(w) || f->refuse_permille > 1000 ||
      f->hang_permille > 1000 - f->refuse_permille || f->drop_permille > 1000 ||
      f->conn.reset_permille != 0 || keel__pipe_faults_check(&f->conn) < 0)
    return -EINVAL;
  labnet_t *net = net_get();
  if (!net)
    return -ENOMEM;
  net->faults = *f;
  return 0;
}

int keel__labnet_resolve(const char *host, in_port_t port_be, keel_addr_t *out) {
  labnet_t *net = net_get();
  if (!net)
    return -ENOMEM;
  uint32_t ip = 0;
  if (strcasecmp(host, "localhost") == 0)
    ip = INADDR_LOOPBACK;
  for (keel__queue_t *n = net->names.next; ip == 0 && n != &net->names; n = n->next) {
    labname_t *name = keel__container_of(n, labname_t, node);
    if (strcasecmp(name->name, host) == 0)
      ip = name->ip;
  }
  if (ip == 0) {
    size_t len = strlen(host);
    labname_t *name = net->names_len < LAB_NAME_MAX ? malloc(sizeof *name + len + 1) : NULL;
    if (!name)
      return -ENOMEM;
    memcpy(name->name, host, len + 1);
    name->ip = ip = LAB_NAME_NET + ++net->names_len;
    keel__queue_insert_tail(&net->names, &name->node);
  }
  memset(out, 0, sizeof *out);
  struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
  sin->sin_family = AF_INET;
  sin->sin_port = port_be;
  sin->sin_addr.s_addr = htonl(ip);
  out->len = sizeof *sin;
  return 1;
}

/* ---- Addresses --------------------------------------------------------------- */

static in_port_t addr_port(const keel_addr_t *a) {
  if (a->ss.ss_family == AF_INET6)
    return ((const struct sockaddr_in6 *)&a->ss)->sin6_port;
  return ((const struct sockaddr_in *)&a->ss)->sin_port;
}

static void addr_set_port(keel_addr_t *a, unsigned port) {
  if (a->ss.ss_family == AF_INET6)
    ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((in_port_t)port);
  else
    ((struct sockaddr_in *)&a->ss)->sin_port = htons((in_port_t)port);
}

static bool addr_is_any(const keel_addr_t *a) {
  if (a->ss.ss_family == AF_INET6)
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
  return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr == htonl(INADDR_ANY);
}

static bool addr_same_host(const keel_addr_t *a, const keel_addr_t *b) {
  if (a->ss.ss_family != b->ss.ss_family)
    return false;
  if (a->ss.ss_family == AF_INET6)
    return memcmp(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr,
                  &((const struct sockaddr_in6 *)&b->ss)->sin6_addr, sizeof(struct in6_addr)) == 0;
  return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr ==
         ((const struct sockaddr_in *)&b->ss)->sin_addr.s_addr;
}

/* Another listener holds a's port on a's host, or on every host. */
static bool addr_taken(const labnet_t *net, const keel_addr_t *a) {
  for (const keel__queue_t *n = net->listeners.next; n != &net->listeners; n = n->next) {
    const keel__lablistener_t *l = keel__container_of(n, keel__lablistener_t, node);
    if (addr_port(&l->addr) == addr_port(a) && l->addr.ss.ss_family == a->ss.ss_family &&
        (addr_same_host(&l->addr, a) || addr_is_any(&l->addr) || addr_is_any(a)))
      return true;
  }
  return false;
}

/* Port 0: the next free port from LAB_PORT_FIRST up, in order, so that a
 * run gets the same ports every time. */
static int assign_port(labnet_t *net, keel_addr_t *a) {
  for (unsigned tries = 0; tries <= LAB_PORT_LAST - LAB_PORT_FIRST; tries++) {
    unsigned port = net->next_port;
    net->next_port = port == LAB_PORT_LAST ? LAB_PORT_FIRST : port + 1;
    addr_set_port(a, port);
    if (!addr_taken(net, a))
      return 0;
  }
  return -EADDRINUSE;
}

static unsigned ephemeral_port(labnet_t *net) {
  unsigned port = net->next_ephemeral;
  net->next_ephemeral = port == LAB_EPHEMERAL_LAST ? LAB_EPHEMERAL_FIRST : port + 1;
  return port;
}

/* The listener a connect to dial reaches: one on that very address first,
 * else one on the wildcard address of the port (an IPv6 one takes IPv4
 * connects too, unless v6only). */
static keel__lablistener_t *listener_find(const labnet_t *net, const keel_addr_t *dial) {
  keel__lablistener_t *wildcard = NULL;
  for (keel__queue_t *n = net->listeners.next; n != &net->listeners; n = n->next) {
    keel__lablistener_t *l = keel__container_of(n, keel__lablistener_t, node);
    if (addr_port(&l->addr) != addr_port(dial))
      continue;
    if (addr_same_host(&l->addr, dial))
      return l;
    bool family_ok = l->addr.ss.ss_family == dial->ss.ss_family ||
                     (l->addr.ss.ss_family == AF_INET6 && !l->v6only);
    if (!wildcard && family_ok && addr_is_any(&l->addr))
      wildcard = l;
  }
  return wildcard;
}

/* ---- Connections: keel_tcp_t over a pipe end ------------------------------------ */

static keel__pipe_end_t *end_of(keel_stream_t *s) { return &((keel_tcp_t *)s)->lab; }

static ssize_t labtcp_readv(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  return keel__pipe_readv(end_of(s), iov, iovcnt);
}
static ssize_t labtcp_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  return keel__pipe_writev(end_of(s), iov, iovcnt);
}
static int labtcp_shutdown(keel_stream_t *s, int how) {
  return keel__pipe_shutdown(end_of(s), how);
}
static int labtcp_close(keel_stream_t *s) {
  if (((keel_tcp_t *)s)->parked)
    return -EBUSY; /* its wait and the task's next call live in it */
  return keel__pipe_close(end_of(s));
}
static int labtcp_wait_readable(keel_stream_t *s) { return keel__pipe_wait_readable(end_of(s)); }

int keel__labnet_tcp_addr(const keel_tcp_t *c, keel_addr_t *out, bool peer) {
  const lablink_t *k = link_of(c->lab.pipe);
  *out = k->addr[peer ? !c->lab.side : c->lab.side];
  return 0;
}

static int labtcp_query(keel_stream_t *s, int what, void *arg, size_t len) {
  keel_tcp_t *c = (keel_tcp_t *)s;
  switch (what) {
  case KEEL_STREAM_Q_WORKER:
    *(int *)arg = c->lab.pipe->worker->id;
    return 0;
  case KEEL_STREAM_Q_PEER_ADDR:
  case KEEL_STREAM_Q_LOCAL_ADDR:
    if (len != sizeof(keel_addr_t))
      return -EINVAL;
    return keel__labnet_tcp_addr(c, arg, what == KEEL_STREAM_Q_PEER_ADDR);
  case KEEL_STREAM_Q_NODELAY: /* nothing is held back: as if TCP_NODELAY were on */
    *(int *)arg = 1;
    return 0;
  case KEEL_STREAM_Q_SET_NODELAY:
    return 0;
  case KEEL__STREAM_Q_LAB_PIPE:
    *(keel__pipe_t **)arg = c->lab.pipe;
    return 0;
  default: /* KEEL_STREAM_Q_FD among them: there is no descriptor */
    return -ENOTSUP;
  }
}

/* Named "tcp": the program sees the transport it asked for. */
static const keel_stream_ops_t labtcp_ops = {
    .name = "tcp",
    .query = labtcp_query,
    .wait_readable = labtcp_wait_readable,
    .readv = labtcp_readv,
    .writev = labtcp_writev,
    .shutdown = labtcp_shutdown,
    .close = labtcp_close,
};

static void labtcp_release(keel__pipe_end_t *e) { free(tcp_of(e)); }

static void link_release(keel__pipe_t *p) {
  lablink_t *k = link_of(p);
  keel__queue_remove(&k->net_node);
  keel__queue_remove(&k->pending_node);
  free(k);
}

/* Makes the connection and queues its server end on l. The client's
 * address is on the host it dialled (the lab network is one machine, as
 * loopback is), with an ephemeral port; the server's is the one dialled. */
static int link_open(labnet_t *net, keel__lablistener_t *l, const keel_addr_t *dial,
                     keel_tcp_t **out) {
  lablink_t *k = malloc(sizeof *k);
  keel_tcp_t *client = malloc(sizeof *client), *server = malloc(sizeof *server);
  keel_lab_faults_t f = net->faults.conn;
  f.reset_permille = net->faults.drop_permille;
  int rc =
      k && client && server ? keel__pipe_init(&k->pipe, &f, &client->lab, &server->lab) : -ENOMEM;
  if (rc < 0)
    goto fail;
  k->pipe.release = link_release;
  k->addr[0] = k->addr[1] = *dial;
  addr_set_port(&k->addr[0], ephemeral_port(net));
  keel__queue_insert_tail(&net->links, &k->net_node);
  keel__queue_insert_tail(&l->pending, &k->pending_node);
  l->pending_len++;
  keel_tcp_t *ends[2] = {client, server};
  for (int i = 0; i < 2; i++) {
    keel_stream_init(&ends[i]->super, &labtcp_ops, NULL);
    ends[i]->lab.release = labtcp_release;
    ends[i]->parked = false;
  }
  keel__waiters_wake_all(&l->accepters, 0); /* they look again; one takes it */
  *out = client;
  return 0;
fail:
  free(server);
  free(client);
  free(k);
  return rc;
}

/* ---- Listeners ------------------------------------------------------------------- */

static void listener_release_if_done(keel__lablistener_t *l) {
  if (l->closed && l->parked == 0)
    free(listener_of(l));
}

/* Parks on one of l's lists. A task woken after the listener closed gets
 * closed_err, and the last one out frees it. */
static int listener_park(keel__lablistener_t *l, keel__queue_t *list, int closed_err) {
  int rc = keel__check_cancel();
  if (rc < 0)
    return rc;
  keel__wait_t w;
  keel__wait_init(&w, keel__wait_abort_dequeue,
                  list == &l->accepters ? KEEL__WAIT_ACCEPT : KEEL__WAIT_CONNECT, l);
  keel__queue_insert_tail(list, &w.node);
  l->parked++;
  rc = (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
  l->parked--;
  if (l->closed) {
    listener_release_if_done(l);
    return closed_err;
  }
  return rc;
}

int keel__labnet_listen(const keel_addr_t *addr, const keel_listen_opts_t *opts,
                        keel_listener_t **out) {
  labnet_t *net = net_get();
  if (!net)
    return -ENOMEM;
  if (addr->ss.ss_family != AF_INET && addr->ss.ss_family != AF_INET6)
    return -EAFNOSUPPORT;
  keel_addr_t a = *addr;
  int rc = addr_port(&a) == 0 ? assign_port(net, &a) : addr_taken(net, &a) ? -EADDRINUSE : 0;
  if (rc < 0)
    return rc;
  keel_listener_t *listener = calloc(1, sizeof *listener);
  if (!listener)
    return -ENOMEM;
  keel__io_init(&listener->io, -1);
  keel__lablistener_t *l = &listener->lab;
  l->addr = a;
  l->v6only = opts->v6only;
  l->backlog = opts->backlog > 0 && opts->backlog < KEEL_LISTEN_BACKLOG ? opts->backlog
                                                                        : KEEL_LISTEN_BACKLOG;
  keel__queue_init(&l->pending);
  keel__queue_init(&l->accepters);
  keel__queue_init(&l->connects);
  keel__queue_insert_tail(&net->listeners, &l->node);
  net_trace(NET_EV_LISTEN, ntohs(addr_port(&a)));
  *out = listener;
  return 0;
}

int keel__labnet_accept(keel_listener_t *listener, keel_tcp_t **out) {
  keel__lablistener_t *l = &listener->lab;
  for (;;) {
    int rc = keel__check_cancel();
    if (rc < 0)
      return rc;
    if (!keel__queue_empty(&l->pending)) {
      lablink_t *k = keel__container_of(l->pending.next, lablink_t, pending_node);
      keel__queue_remove(&k->pending_node);
      l->pending_len--;
      keel__waiters_wake_all(&l->connects, 0); /* room in the backlog */
      net_trace(NET_EV_ACCEPT, ntohs(addr_port(&k->addr[0])));
      *out = tcp_of(k->pipe.end[1]);
      return 0;
    }
    rc = listener_park(l, &l->accepters, -EBADF);
    if (rc < 0)
      return rc;
  }
}

/* Connections queued and not accepted are reset, as the kernel does. */
int keel__labnet_listener_close(keel_listener_t *listener) {
  keel__lablistener_t *l = &listener->lab;
  net_trace(NET_EV_CLOSE, ntohs(addr_port(&l->addr)));
  l->closed = true;
  keel__queue_remove(&l->node);
  keel__waiters_wake_all(&l->accepters, -EBADF);
  keel__waiters_wake_all(&l->connects, -ECONNREFUSED);
  while (!keel__queue_empty(&l->pending)) {
    lablink_t *k = keel__container_of(l->pending.next, lablink_t, pending_node);
    keel__queue_remove(&k->pending_node);
    l->pending_len--;
    keel__pipe_reset(&k->pipe);
    keel__pipe_close(k->pipe.end[1]); /* may free k */
  }
  listener_release_if_done(l);
  return 0;
}

/* ---- Connect ----------------------------------------------------------------------- */

/* A connect the network swallowed: nothing answers until the deadline. */
static int hang(void) {
  keel__wait_t w;
  keel__wait_init(&w, NULL, KEEL__WAIT_CONNECT, NULL);
  w.alertable = true;
  return (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
}

/* One draw decides a connect's fault: refused, hanging, or none. */
static int connect_fault(const keel_lab_net_faults_t *f) {
  if (f->refuse_permille + f->hang_permille == 0)
    return 0;
  uint64_t r = keel_random_below(1000);
  if (r < f->refuse_permille)
    return -ECONNREFUSED;
  if (r < f->refuse_permille + f->hang_permille)
    return hang();
  return 0;
}

static int connect_to(labnet_t *net, const keel_addr_t *dial, keel_tcp_t **out) {
  keel__lablistener_t *l = listener_find(net, dial);
  if (!l)
    return -ECONNREFUSED; /* nobody listens: refused at once */
  int rc = connect_fault(&net->faults);
  if (rc < 0)
    return rc;
  /* A full backlog holds the connect back, as unanswered SYNs do, until an
   * accept makes room. The listener may close meanwhile: look again. */
  while ((l = listener_find(net, dial)) && l->pending_len >= l->backlog) {
    rc = listener_park(l, &l->connects, -ECONNREFUSED);
    if (rc < 0)
      return rc;
  }
  return l ? link_open(net, l, dial, out) : -ECONNREFUSED;
}

int keel__labnet_connect(const keel_addr_t *dial, keel_tcp_t **out) {
  labnet_t *net = net_get();
  if (!net)
    return -ENOMEM;
  int rc = keel__check_cancel();
  if (rc == 0)
    rc = connect_to(net, dial, out);
  net_trace(NET_EV_CONNECT, (uint64_t)(int64_t)rc);
  return rc;
}
