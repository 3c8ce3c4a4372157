/* echo-uring: a TCP echo server on raw io_uring (liburing), a benchmark peer
 * for keel.
 *
 *   echo-uring [--host H] [--port P]
 *
 * The practical limit of what a careful programmer writes by hand: one
 * thread, one ring (single issuer, deferred task work where the kernel has
 * it), a multishot accept, and per connection one recv into a 16 KiB buffer,
 * a send of what came in (again for the rest after a short send), then the
 * next recv. Each loop turn is one io_uring_submit_and_wait() followed by a
 * drain of every CQE. Nothing is allocated per message. Prints
 * "echo-uring listening on ADDR:PORT" once ready; SIGINT or SIGTERM exits 0,
 * a startup failure exits 1. The command line, listener and banner are
 * peer-common.c's; the event loop, the part compared, is all here so that a
 * peer is read as a whole next to the others. */
#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer-common.h"

#define PROG "echo-uring"
#define CONN_BUF_SIZE 16384
#define SQ_ENTRIES 4096
/* Every connection has exactly one operation in flight, so a CQ larger than
 * the connection count (10,000 in the benchmark) never overflows into the
 * kernel's slower backlog list. */
#define CQ_ENTRIES 16384
#define ACCEPT_BACKOFF_NS 10000000 /* 10 ms pause after EMFILE and friends */

/* Older liburing headers: the values are kernel ABI. */
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

/* user_data is a conn_t pointer (malloc aligns it to at least 8) with the
 * operation in the low three bits; ring-wide operations carry no pointer. */
enum op { OP_ACCEPT, OP_RECV, OP_SEND, OP_SIGNAL, OP_BACKOFF };
#define OP_MASK 7u

typedef struct conn {
  int fd;
  uint32_t received; /* bytes of buf from the last recv, to echo */
  uint32_t sent;     /* of those, how many went out */
  char buf[CONN_BUF_SIZE];
} conn_t;

typedef struct server {
  struct io_uring ring;
  int listen_fd;
  int signal_fd;
  struct signalfd_siginfo siginfo;  /* target of the pending signalfd read */
  struct __kernel_timespec backoff; /* must outlive the timeout's submission */
  bool accept_error_logged;
  bool stop;
  int exit_code;
} server_t;

static uint64_t tag(conn_t *c, enum op op) { return (uint64_t)(uintptr_t)c | op; }

/* A full SQ is flushed to the kernel to make room: one CQE batch can ask
 * for more operations (one per connection) than the SQ holds. */
static struct io_uring_sqe *get_sqe(server_t *srv) {
  struct io_uring_sqe *sqe;
  while ((sqe = io_uring_get_sqe(&srv->ring)) == NULL)
    io_uring_submit(&srv->ring);
  return sqe;
}

static void arm_accept(server_t *srv) {
  struct io_uring_sqe *sqe = get_sqe(srv);
  io_uring_prep_multishot_accept(sqe, srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, tag(NULL, OP_ACCEPT));
}

static void arm_backoff(server_t *srv) {
  struct io_uring_sqe *sqe = get_sqe(srv);
  io_uring_prep_timeout(sqe, &srv->backoff, 0, 0);
  io_uring_sqe_set_data64(sqe, tag(NULL, OP_BACKOFF));
}

static void arm_signal(server_t *srv) {
  struct io_uring_sqe *sqe = get_sqe(srv);
  io_uring_prep_read(sqe, srv->signal_fd, &srv->siginfo, sizeof srv->siginfo, 0);
  io_uring_sqe_set_data64(sqe, tag(NULL, OP_SIGNAL));
}

static void arm_recv(server_t *srv, conn_t *c) {
  struct io_uring_sqe *sqe = get_sqe(srv);
  io_uring_prep_recv(sqe, c->fd, c->buf, sizeof c->buf, 0);
  io_uring_sqe_set_data64(sqe, tag(c, OP_RECV));
}

static void arm_send(server_t *srv, conn_t *c) {
  struct io_uring_sqe *sqe = get_sqe(srv);
  io_uring_prep_send(sqe, c->fd, c->buf + c->sent, c->received - c->sent, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, tag(c, OP_SEND));
}

/* Only called from a connection's CQE: with its one operation complete the
 * kernel holds no pointer into it, so the buffer can go at once. */
static void conn_close(conn_t *c) {
  close(c->fd);
  free(c);
}

static void conn_start(server_t *srv, int fd) {
  int one = 1;
  conn_t *c = malloc(sizeof *c);
  if (c == NULL || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
    free(c);
    close(fd);
    return;
  }
  assert(((uintptr_t)c & OP_MASK) == 0);
  c->fd = fd;
  c->received = c->sent = 0;
  arm_recv(srv, c);
}

/* EOF, ECONNRESET and the like end this connection and nothing else. */
static void on_recv(server_t *srv, conn_t *c, int res) {
  if (res <= 0) {
    conn_close(c);
    return;
  }
  c->received = (uint32_t)res;
  c->sent = 0;
  arm_send(srv, c);
}

static void on_send(server_t *srv, conn_t *c, int res) {
  if (res <= 0) {
    conn_close(c); /* EPIPE, ECONNRESET... */
    return;
  }
  c->sent += (uint32_t)res;
  if (c->sent < c->received)
    arm_send(srv, c);
  else
    arm_recv(srv, c);
}

/* Errors that say the listener itself is unusable. */
static bool accept_error_fatal(int res) {
  return res == -EINVAL || res == -EBADF || res == -ENOTSOCK;
}

/* Any error ends the multishot accept. Re-arming at once after EMFILE would
 * spin (the kernel fails before it looks at the backlog), so resource errors
 * wait a little for descriptors or memory to come back; meanwhile the
 * pending connections stay queued in the backlog. */
static void on_accept(server_t *srv, const struct io_uring_cqe *cqe) {
  if (cqe->res >= 0)
    conn_start(srv, cqe->res);
  if (cqe->flags & IORING_CQE_F_MORE)
    return;
  int res = cqe->res;
  if (accept_error_fatal(res)) {
    fprintf(stderr, PROG ": multishot accept: %s\n", strerror(-res));
    srv->stop = true;
    srv->exit_code = 1;
  } else if (res == -EMFILE || res == -ENFILE || res == -ENOMEM || res == -ENOBUFS) {
    if (!srv->accept_error_logged)
      fprintf(stderr, PROG ": accept: %s; pausing new connections\n", strerror(-res));
    srv->accept_error_logged = true;
    arm_backoff(srv);
  } else {
    arm_accept(srv);
  }
}

static void on_signal(server_t *srv, int res) {
  if (res == (int)sizeof srv->siginfo)
    srv->stop = true;
  else
    arm_signal(srv);
}

static void dispatch(server_t *srv, const struct io_uring_cqe *cqe) {
  conn_t *c = (conn_t *)(uintptr_t)(cqe->user_data & ~(uint64_t)OP_MASK);
  switch ((enum op)(cqe->user_data & OP_MASK)) {
  case OP_ACCEPT:
    on_accept(srv, cqe);
    break;
  case OP_RECV:
    on_recv(srv, c, cqe->res);
    break;
  case OP_SEND:
    on_send(srv, c, cqe->res);
    break;
  case OP_SIGNAL:
    on_signal(srv, cqe->res);
    break;
  case OP_BACKOFF:
    arm_accept(srv);
    break;
  }
}

static int run(server_t *srv) {
  while (!srv->stop) {
    int rc = io_uring_submit_and_wait(&srv->ring, 1);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      fprintf(stderr, PROG ": io_uring_submit_and_wait: %s\n", strerror(-rc));
      return 1;
    }
    unsigned head, seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&srv->ring, head, cqe) {
      dispatch(srv, cqe);
      seen++;
    }
    io_uring_cq_advance(&srv->ring, seen);
  }
  return srv->exit_code;
}

/* Single issuer with deferred task work runs completions only when we ask
 * for them (in submit_and_wait), not by interrupting us; kernels before 6.1
 * refuse the flags with -EINVAL and get a plain ring. */
static int ring_init(struct io_uring *ring) {
  struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                       IORING_SETUP_CQSIZE,
                              .cq_entries = CQ_ENTRIES};
  int rc = io_uring_queue_init_params(SQ_ENTRIES, ring, &p);
  if (rc == -EINVAL) {
    p = (struct io_uring_params){.flags = IORING_SETUP_CQSIZE, .cq_entries = CQ_ENTRIES};
    rc = io_uring_queue_init_params(SQ_ENTRIES, ring, &p);
  }
  if (rc < 0)
    return rc;
  /* Saves an fget/fput per io_uring_enter; optional (kernel 5.18+). */
  io_uring_register_ring_fd(ring);
  return 0;
}

/* Returns 0, or -errno after naming the step that failed. */
static int setup(server_t *srv, const struct sockaddr_storage *ss, socklen_t len) {
  const char *step = "signalfd";
  int rc = srv->signal_fd = peer_open_signalfd(0);
  if (rc >= 0) {
    step = "listen";
    /* Blocking: the ring polls it itself. */
    rc = srv->listen_fd = peer_open_listener(ss, len, 0);
  }
  if (rc >= 0) {
    step = "io_uring_queue_init_params";
    rc = ring_init(&srv->ring);
  }
  if (rc < 0) {
    fprintf(stderr, PROG ": %s: %s\n", step, strerror(-rc));
    return rc;
  }
  srv->backoff.tv_nsec = ACCEPT_BACKOFF_NS;
  arm_signal(srv);
  arm_accept(srv);
  return 0;
}

/* Exit reclaims the connections and the ring: tearing down 10,000 of them
 * one by one would only delay the shutdown the benchmark is waiting for. */
int main(int argc, char **argv) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (peer_listen_addr(PROG, argc, argv, &ss, &len) < 0)
    return 1;
  signal(SIGPIPE, SIG_IGN);
  server_t srv = {.listen_fd = -1, .signal_fd = -1};
  if (setup(&srv, &ss, len) < 0)
    return 1;
  int rc = peer_announce(PROG, srv.listen_fd);
  if (rc < 0) {
    fprintf(stderr, PROG ": getsockname: %s\n", strerror(-rc));
    return 1;
  }
  rc = run(&srv);
  /* The ring is torn down by a kernel worker after exit, and until then its
   * accept keeps the listening socket open and the port taken. Shutting the
   * listener down unhashes it now, so the port can be bound again at once. */
  shutdown(srv.listen_fd, SHUT_RDWR);
  return rc;
}
