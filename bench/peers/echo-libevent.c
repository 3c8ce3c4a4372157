/* echo-libevent: a TCP echo server on libevent 2.1, a benchmark peer for keel.
 *
 *   echo-libevent [--host H] [--port P]
 *
 * Idiomatic libevent: an evconnlistener accepts, each connection is a
 * socket bufferevent, and the read callback moves the whole input buffer to
 * the output buffer (evbuffer_add_buffer relinks chains, it copies nothing);
 * libevent writes it out. Prints "echo-libevent listening on ADDR:PORT"
 * once ready; SIGINT or SIGTERM exits 0, a startup failure exits 1. The
 * command line and banner are peer-common.c's; the event loop, the part
 * compared, is all here so that a peer is read as a whole next to the others. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "peer-common.h"

#define PROG "echo-libevent"

typedef struct server {
  struct event_base *base;
  struct evconnlistener *listener;
  struct event *sigint;
  struct event *sigterm;
  int reserve_fd; /* spare descriptor, given up to shed a connection at EMFILE */
  bool accept_error_logged;
} server_t;

static void on_read(struct bufferevent *bev, void *arg) {
  (void)arg;
  evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

/* Write callback once the peer has sent EOF: runs when the output buffer has
 * drained (the default low watermark is 0), so the last echo is not lost. */
static void on_drained(struct bufferevent *bev, void *arg) {
  (void)arg;
  bufferevent_free(bev);
}

static void on_event(struct bufferevent *bev, short events, void *arg) {
  if (events & BEV_EVENT_ERROR) {
    bufferevent_free(bev); /* ECONNRESET, EPIPE...: this connection only */
  } else if (events & BEV_EVENT_EOF) {
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
      bufferevent_free(bev);
      return;
    }
    bufferevent_disable(bev, EV_READ);
    bufferevent_setcb(bev, NULL, on_drained, on_event, arg);
  }
}

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *addr,
                      int socklen, void *arg) {
  (void)listener, (void)addr, (void)socklen;
  server_t *srv = arg;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct bufferevent *bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (bev == NULL) {
    evutil_closesocket(fd);
    return;
  }
  bufferevent_setcb(bev, on_read, NULL, on_event, srv);
  if (bufferevent_enable(bev, EV_READ) < 0)
    bufferevent_free(bev);
}

/* The listener is level-triggered, and without this callback libevent would
 * log every failed accept and come straight back: at EMFILE that is a
 * spinning loop. Giving up the spare descriptor lets us accept the pending
 * connection and close it at once (libev and libuv do the same); the peer
 * sees a close instead of hanging in the backlog. */
static void on_accept_error(struct evconnlistener *listener, void *arg) {
  server_t *srv = arg;
  int err = EVUTIL_SOCKET_ERROR();
  if (!srv->accept_error_logged)
    fprintf(stderr, PROG ": accept: %s\n", evutil_socket_error_to_string(err));
  srv->accept_error_logged = true;
  if (err != EMFILE && err != ENFILE)
    return;
  if (srv->reserve_fd >= 0)
    close(srv->reserve_fd);
  int fd = accept(evconnlistener_get_fd(listener), NULL, NULL);
  if (fd >= 0)
    close(fd);
  srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_signal(evutil_socket_t signum, short events, void *arg) {
  (void)signum, (void)events;
  event_base_loopbreak(arg);
}

/* Returns 0, or -1 after naming the step that failed. */
static int setup(server_t *srv, const struct sockaddr_storage *ss, socklen_t len) {
  srv->base = event_base_new();
  if (srv->base == NULL) {
    fprintf(stderr, PROG ": event_base_new failed\n");
    return -1;
  }
  srv->sigint = evsignal_new(srv->base, SIGINT, on_signal, srv->base);
  srv->sigterm = evsignal_new(srv->base, SIGTERM, on_signal, srv->base);
  if (srv->sigint == NULL || srv->sigterm == NULL || evsignal_add(srv->sigint, NULL) < 0 ||
      evsignal_add(srv->sigterm, NULL) < 0) {
    fprintf(stderr, PROG ": cannot watch SIGINT/SIGTERM\n");
    return -1;
  }
  srv->listener =
      evconnlistener_new_bind(srv->base, on_accept, srv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                              PEER_LISTEN_BACKLOG, (const struct sockaddr *)ss, (int)len);
  if (srv->listener == NULL) {
    fprintf(stderr, PROG ": listen: %s\n", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    return -1;
  }
  evconnlistener_set_error_cb(srv->listener, on_accept_error);
  srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return 0;
}

/* Exit reclaims the connections: freeing 10,000 bufferevents one by one
 * would only delay the shutdown the benchmark is waiting for. */
int main(int argc, char **argv) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (peer_listen_addr(PROG, argc, argv, &ss, &len) < 0)
    return 1;
  signal(SIGPIPE, SIG_IGN); /* bufferevents write with writev(2), not MSG_NOSIGNAL */
  server_t srv = {.reserve_fd = -1};
  if (setup(&srv, &ss, len) < 0)
    return 1;
  int rc = peer_announce(PROG, evconnlistener_get_fd(srv.listener));
  if (rc < 0) {
    fprintf(stderr, PROG ": getsockname: %s\n", strerror(-rc));
    return 1;
  }
  if (event_base_dispatch(srv.base) < 0) {
    fprintf(stderr, PROG ": event_base_dispatch failed\n");
    return 1;
  }
  return 0;
}
