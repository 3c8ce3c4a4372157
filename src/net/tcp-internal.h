/* Internal header: TCP connections and listeners (src/net/tcp.c), and
 * their lab-mode variant on the in-memory network (src/net/labnet.c). */
#ifndef KEEL_TCP_INTERNAL_H
#define KEEL_TCP_INTERNAL_H

#include <netinet/in.h>

#include "worker.h"
#include "keel/stream-impl.h"
#include "keel/tcp.h"
#include "labpipe-internal.h"

/* A connection is a socket on io_uring and epoll, and one end of an
 * in-memory pipe in lab mode. super.ops tells which (tcp.c's ops or
 * labnet.c's), so the real read and write paths test nothing: the lab
 * variant has ops of its own. The lab end is no larger than the socket
 * state, so the union costs a real connection nothing. */
struct keel_tcp {
  keel_stream_t super;
  union {
    keel__io_t io;        /* a socket */
    keel__pipe_end_t lab; /* lab mode: its pipe lives in a labnet link */
  };
  keel__restart_t park; /* keel_tcp_park: the wait outlives the stack */
  bool parked;          /* a task waits in park: close and a second park refuse */
  bool counted;         /* counted as open in the metrics: count its close */
  uint8_t end;          /* how the connection is ending (tcp.c's metrics): END_* */
};

/* Lab mode's side of a listener: an entry in the network's table. */
typedef struct keel__lablistener {
  keel__queue_t node;      /* in the network's listeners, while open */
  keel_addr_t addr;        /* what it listens on, port assigned */
  bool v6only;             /* an IPv6 wildcard that takes no IPv4 connects */
  bool closed;             /* closed, waiting for parked tasks to leave */
  int backlog;             /* connections queued before connects wait */
  int pending_len;         /* connections queued, not accepted yet */
  int parked;              /* tasks in accept or connect that read it on waking */
  keel__queue_t pending;   /* links, by pending_node, oldest first */
  keel__queue_t accepters; /* tasks waiting in accept */
  keel__queue_t connects;  /* connects waiting for room in the backlog */
} keel__lablistener_t;

struct keel_listener {
  keel__io_t io; /* lab mode: only io.worker (the owner) is used */
  union {
    struct { /* a socket */
      keel__acceptq_t acceptq;
      int64_t last_emfile_log_ns;
      keel__queue_t backoff_waiters; /* acceptors sleeping off EMFILE */
    };
    keel__lablistener_t lab; /* lab mode */
  };
};

/* Lab mode (src/net/labnet.c): the keel_tcp_* calls on lab objects. */
int keel__labnet_listen(const keel_addr_t *addr, const keel_listen_opts_t *opts,
                        keel_listener_t **out);
int keel__labnet_accept(keel_listener_t *l, keel_tcp_t **out);
int keel__labnet_listener_close(keel_listener_t *l);
int keel__labnet_connect(const keel_addr_t *addr, keel_tcp_t **out);
/* The local (peer false) or peer address of a lab connection. */
int keel__labnet_tcp_addr(const keel_tcp_t *c, keel_addr_t *out, bool peer);
/* Resolves a host name on the lab network: "localhost" is 127.0.0.1, any
 * other name gets an address of 198.18.0.0/15 of its own, in the order
 * names are first seen. Returns 1, -EINVAL or -ENOMEM. */
int keel__labnet_resolve(const char *host, in_port_t port_be, keel_addr_t *out);

#endif
