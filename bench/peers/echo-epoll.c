/* echo-epoll: a TCP echo server on raw epoll, a benchmark peer for keel.
 *
 *   echo-epoll [--host H] [--port P]
 *
 * What a careful C programmer writes by hand: one thread, nonblocking
 * sockets, level-triggered epoll, one read() per readiness event into a
 * 16 KiB per-connection buffer and the bytes written straight back. A short
 * write parks the rest and swaps EPOLLIN for EPOLLOUT until it is flushed,
 * so a slow reader is back-pressure, not buffering. Nothing is allocated per
 * message. Prints "echo-epoll listening on ADDR:PORT" once ready; SIGINT or
 * SIGTERM exits 0, a startup failure exits 1. The command line, listener
 * and banner are peer-common.c's; the event loop, the part compared, is all
 * here so that a peer is read as a whole next to the others. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer-common.h"

#define PROG "echo-epoll"
#define CONN_BUF_SIZE 16384
#define MAX_EVENTS 512

typedef struct conn {
  int fd;
  uint32_t unsent_off; /* buf[unsent_off, unsent_end) still has to go out */
  uint32_t unsent_end;
  char buf[CONN_BUF_SIZE];
} conn_t;

/* epoll_event.data.ptr is a conn_t, or the address of listen_fd or
 * signal_fd for those two descriptors. */
typedef struct server {
  int epoll_fd;
  int listen_fd;
  int signal_fd;
  int reserve_fd; /* spare descriptor, given up to shed a connection at EMFILE */
  bool emfile_logged;
  bool stop;
} server_t;

static int watch(server_t *srv, int op, int fd, uint32_t events, void *ptr) {
  struct epoll_event ev = {.events = events, .data.ptr = ptr};
  return epoll_ctl(srv->epoll_fd, op, fd, &ev) < 0 ? -errno : 0;
}

/* close() also drops the descriptor from the epoll set: it is never dup'ed. */
static void conn_close(conn_t *c) {
  close(c->fd);
  free(c);
}

/* Sends what is parked. Returns 0 when all of it went out, 1 when the socket
 * is full, or -errno (the peer reset or went away). */
static int conn_flush(conn_t *c) {
  while (c->unsent_off < c->unsent_end) {
    ssize_t n = send(c->fd, c->buf + c->unsent_off, c->unsent_end - c->unsent_off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno == EAGAIN ? 1 : -errno;
    }
    c->unsent_off += (uint32_t)n;
  }
  return 0;
}

/* One read per readiness event: level triggering brings us back if more is
 * queued, and the other connections get their turn in between. */
static void conn_on_readable(server_t *srv, conn_t *c) {
  ssize_t n = read(c->fd, c->buf, sizeof c->buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0) {
    conn_close(c); /* EOF, or ECONNRESET and friends */
    return;
  }
  c->unsent_off = 0;
  c->unsent_end = (uint32_t)n;
  int rc = conn_flush(c);
  if (rc == 1)
    rc = watch(srv, EPOLL_CTL_MOD, c->fd, EPOLLOUT, c);
  if (rc < 0)
    conn_close(c);
}

static void conn_on_writable(server_t *srv, conn_t *c) {
  int rc = conn_flush(c);
  if (rc == 0)
    rc = watch(srv, EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
  if (rc < 0)
    conn_close(c);
}

static void conn_start(server_t *srv, int fd) {
  int one = 1;
  conn_t *c = malloc(sizeof *c);
  if (c == NULL || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
    goto fail;
  c->fd = fd;
  c->unsent_off = c->unsent_end = 0;
  if (watch(srv, EPOLL_CTL_ADD, fd, EPOLLIN, c) < 0)
    goto fail;
  return;
fail:
  free(c);
  close(fd);
}

/* Out of descriptors, the pending connection would keep the level-triggered
 * listener ready and epoll_wait would spin. Giving up the spare descriptor
 * lets us accept that connection and close it at once (libev and libuv do
 * the same); the peer sees a close instead of hanging in the backlog.
 * Returns 0 when one was shed, -1 when the backlog is empty or even the
 * spare could not help (ENFILE: another process took the slot). */
static int shed_one(server_t *srv) {
  if (!srv->emfile_logged) {
    fprintf(stderr, PROG ": out of file descriptors, shedding new connections\n");
    srv->emfile_logged = true;
  }
  if (srv->reserve_fd >= 0)
    close(srv->reserve_fd);
  int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd >= 0)
    close(fd);
  srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd >= 0 ? 0 : -1;
}

static void accept_all(server_t *srv) {
  for (;;) {
    int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      conn_start(srv, fd);
    } else if (errno == EMFILE || errno == ENFILE) {
      if (shed_one(srv) < 0)
        return;
    } else if (errno == EAGAIN) {
      return;
    } else if (errno == ENOBUFS || errno == ENOMEM) {
      return; /* memory pressure: come back on the next wakeup */
    }
    /* ECONNABORTED, EPROTO, EINTR...: one peer's trouble, keep going */
  }
}

static void dispatch(server_t *srv, const struct epoll_event *ev) {
  if (ev->data.ptr == &srv->listen_fd) {
    accept_all(srv);
  } else if (ev->data.ptr == &srv->signal_fd) {
    srv->stop = true;
  } else {
    conn_t *c = ev->data.ptr;
    /* Errors and hang-ups are reported by the read or send they cause. */
    if (c->unsent_off < c->unsent_end)
      conn_on_writable(srv, c);
    else
      conn_on_readable(srv, c);
  }
}

static int run(server_t *srv) {
  struct epoll_event events[MAX_EVENTS];
  while (!srv->stop) {
    int n = epoll_wait(srv->epoll_fd, events, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      fprintf(stderr, PROG ": epoll_wait: %s\n", strerror(errno));
      return 1;
    }
    /* Closing a connection frees only the one whose event is in hand, and
     * each descriptor appears once per batch, so no later entry dangles. */
    for (int i = 0; i < n; i++)
      dispatch(srv, &events[i]);
  }
  return 0;
}

/* Returns 0, or -errno after naming the step that failed. */
static int setup(server_t *srv, const struct sockaddr_storage *ss, socklen_t len) {
  const char *step = "signalfd";
  int rc = srv->signal_fd = peer_open_signalfd(SFD_NONBLOCK);
  if (rc >= 0) {
    step = "listen";
    /* Nonblocking: accept_all() takes connections until EAGAIN. */
    rc = srv->listen_fd = peer_open_listener(ss, len, SOCK_NONBLOCK);
  }
  if (rc >= 0) {
    step = "epoll_create1";
    srv->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    rc = srv->epoll_fd < 0 ? -errno : 0;
  }
  if (rc >= 0)
    rc = watch(srv, EPOLL_CTL_ADD, srv->listen_fd, EPOLLIN, &srv->listen_fd);
  if (rc >= 0)
    rc = watch(srv, EPOLL_CTL_ADD, srv->signal_fd, EPOLLIN, &srv->signal_fd);
  if (rc < 0) {
    fprintf(stderr, PROG ": %s: %s\n", step, strerror(-rc));
    return rc;
  }
  srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return 0;
}

/* Exit reclaims the connections: freeing 10,000 of them one by one would
 * only delay the shutdown the benchmark is waiting for. */
int main(int argc, char **argv) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (peer_listen_addr(PROG, argc, argv, &ss, &len) < 0)
    return 1;
  signal(SIGPIPE, SIG_IGN);
  server_t srv = {.epoll_fd = -1, .listen_fd = -1, .signal_fd = -1, .reserve_fd = -1};
  if (setup(&srv, &ss, len) < 0)
    return 1;
  int rc = peer_announce(PROG, srv.listen_fd);
  if (rc < 0) {
    fprintf(stderr, PROG ": getsockname: %s\n", strerror(-rc));
    return 1;
  }
  return run(&srv);
}
