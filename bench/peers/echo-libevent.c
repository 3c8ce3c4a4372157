/* echo-libevent: a TCP echo server on libevent 2.1, a benchmark peer for keel.
 *
 *   echo-libevent [--host H] [--port P]
 *
 * Idiomatic libevent: an evconnlistener accepts, each connection is a
 * socket bufferevent, and the read callback moves the whole input buffer to
 * the output buffer (evbuffer_add_buffer relinks chains, it copies nothing);
 * libevent writes it out. Prints "echo-libevent listening on ADDR:PORT"
 * once ready; SIGINT or SIGTERM exits 0, a startup failure exits 1.
 * Self-contained on purpose: a peer is read as a whole next to the others. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#define PROG "echo-libevent"
#define LISTEN_BACKLOG 4096

typedef struct server {
  struct event_base *base;
  struct evconnlistener *listener;
  struct event *sigint;
  struct event *sigterm;
  int reserve_fd; /* spare descriptor, given up to shed a connection at EMFILE */
  bool accept_error_logged;
} server_t;

static void usage(FILE *out) {
  fprintf(out, "usage: " PROG " [--host H] [--port P]\n"
               "  --host H  numeric IPv4 or IPv6 address to listen on (default 127.0.0.1)\n"
               "  --port P  port, 0 = any free one (default 7000)\n");
}

/* Returns 0, or -1 after printing usage (exit 1); exits 0 itself on --help. */
static int parse_args(int argc, char **argv, const char **host, int *port) {
  static const struct option longopts[] = {{"host", required_argument, NULL, 'H'},
                                           {"port", required_argument, NULL, 'p'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  int opt;
  while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    char *end;
    long v;
    switch (opt) {
    case 'H':
      *host = optarg;
      break;
    case 'p':
      errno = 0;
      v = strtol(optarg, &end, 10);
      if (errno != 0 || end == optarg || *end != '\0' || v < 0 || v > 65535)
        goto bad;
      *port = (int)v;
      break;
    case 'h':
      usage(stdout);
      exit(0);
    default:
      goto bad;
    }
  }
  if (optind == argc)
    return 0;
bad:
  usage(stderr);
  return -1;
}

/* Numeric addresses only: a benchmark must not wait on a resolver. */
static int parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *sin = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    *len = sizeof *sin;
    return 0;
  }
  if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    *len = sizeof *sin6;
    return 0;
  }
  return -EINVAL;
}

/* Prints the banner with the port actually bound, which --port 0 needs. */
static void announce(const struct sockaddr_storage *ss) {
  char text[INET6_ADDRSTRLEN];
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
    printf(PROG " listening on [%s]:%u\n", text, ntohs(sin6->sin6_port));
  } else {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    printf(PROG " listening on %s:%u\n", text, ntohs(sin->sin_port));
  }
  fflush(stdout);
}

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
                              LISTEN_BACKLOG, (const struct sockaddr *)ss, (int)len);
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
  const char *host = "127.0.0.1";
  int port = 7000;
  if (parse_args(argc, argv, &host, &port) < 0)
    return 1;
  struct sockaddr_storage ss;
  socklen_t len;
  if (parse_addr(host, port, &ss, &len) < 0) {
    fprintf(stderr, PROG ": --host %s: not a numeric IPv4 or IPv6 address\n", host);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN); /* bufferevents write with writev(2), not MSG_NOSIGNAL */
  server_t srv = {.reserve_fd = -1};
  if (setup(&srv, &ss, len) < 0)
    return 1;
  len = sizeof ss;
  if (getsockname(evconnlistener_get_fd(srv.listener), (struct sockaddr *)&ss, &len) < 0) {
    fprintf(stderr, PROG ": getsockname: %s\n", strerror(errno));
    return 1;
  }
  announce(&ss);
  if (event_base_dispatch(srv.base) < 0) {
    fprintf(stderr, PROG ": event_base_dispatch failed\n");
    return 1;
  }
  return 0;
}
