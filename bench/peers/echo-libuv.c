/* echo-libuv: a TCP echo server on libuv, a benchmark peer for keel.
 *
 *   echo-libuv [--host H] [--port P]
 *
 * Idiomatic libuv, written for speed: each connection owns its uv_tcp_t,
 * its uv_write_t and a 16 KiB buffer that alloc_cb hands out, so nothing is
 * allocated per message. A read is written back at once with uv_try_write
 * (what node and other fast libuv users do); only what the socket does not
 * take goes through uv_write, and reading pauses until its callback, which
 * keeps the one buffer safe to reuse and makes a slow reader back-pressure.
 * Prints "echo-libuv listening on ADDR:PORT" once ready; SIGINT or SIGTERM
 * exits 0, a startup failure exits 1. The command line and banner are
 * peer-common.c's; the event loop, the part compared, is all here so that a
 * peer is read as a whole next to the others. */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <uv.h>

#include "peer-common.h"

#define PROG "echo-libuv"
#define CONN_BUF_SIZE 16384

typedef struct conn {
  uv_tcp_t tcp; /* first: the handle pointer is the conn pointer */
  uv_write_t write_req;
  char buf[CONN_BUF_SIZE];
} conn_t;

typedef struct server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_timer_t retry_accept; /* after malloc failed for a new connection */
  uv_signal_t sigint;
  uv_signal_t sigterm;
  bool accept_error_logged;
} server_t;

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void on_close(uv_handle_t *handle) { free(handle); /* the conn_t */ }

static void conn_close(conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* Always the same buffer: reading is stopped while it is being written. */
static void on_alloc(uv_handle_t *handle, size_t suggested_size, uv_buf_t *buf) {
  (void)suggested_size;
  conn_t *c = (conn_t *)handle;
  *buf = uv_buf_init(c->buf, sizeof c->buf);
}

static void on_write(uv_write_t *req, int status) {
  conn_t *c = (conn_t *)req->handle;
  if (status < 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
    conn_close(c); /* EPIPE, ECONNRESET...: this connection only */
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = (conn_t *)stream;
  if (nread == 0)
    return; /* EAGAIN */
  if (nread < 0) {
    conn_close(c); /* UV_EOF, UV_ECONNRESET... */
    return;
  }
  uv_buf_t out = uv_buf_init(buf->base, (unsigned)nread);
  int sent = uv_try_write(stream, &out, 1);
  if (sent == nread)
    return;
  if (sent < 0 && sent != UV_EAGAIN) {
    conn_close(c);
    return;
  }
  if (sent > 0) {
    out.base += sent;
    out.len -= (size_t)sent;
  }
  uv_read_stop(stream);
  if (uv_write(&c->write_req, stream, &out, 1, on_write) < 0)
    conn_close(c);
}

static void on_connection(uv_stream_t *listener, int status);

static void on_retry_accept(uv_timer_t *timer) {
  server_t *srv = timer->data;
  on_connection((uv_stream_t *)&srv->listener, 0);
}

/* libuv has already done the EMFILE dance (a reserved descriptor, the
 * connection accepted and closed) when status is an error; it only reports. */
static void on_connection(uv_stream_t *listener, int status) {
  server_t *srv = listener->data;
  if (status < 0) {
    if (!srv->accept_error_logged)
      fprintf(stderr, PROG ": accept: %s\n", uv_strerror(status));
    srv->accept_error_logged = true;
    return;
  }
  conn_t *c = malloc(sizeof *c);
  if (c == NULL) {
    /* Without a handle to accept into, libuv parks the connection and stops
     * watching the listener until uv_accept: try again shortly. */
    uv_timer_start(&srv->retry_accept, on_retry_accept, 10, 0);
    return;
  }
  uv_tcp_init(srv->loop, &c->tcp);
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0 || uv_tcp_nodelay(&c->tcp, 1) < 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
    conn_close(c);
}

static void on_signal(uv_signal_t *handle, int signum) {
  (void)signum;
  uv_stop(handle->loop);
}

/* Returns 0, or a libuv error after naming the step that failed. */
static int setup(server_t *srv, const struct sockaddr_storage *ss) {
  srv->loop = uv_default_loop();
  uv_tcp_init(srv->loop, &srv->listener);
  uv_timer_init(srv->loop, &srv->retry_accept);
  uv_signal_init(srv->loop, &srv->sigint);
  uv_signal_init(srv->loop, &srv->sigterm);
  srv->listener.data = srv->retry_accept.data = srv;
  const char *step = "signal";
  int rc = uv_signal_start(&srv->sigint, on_signal, SIGINT);
  if (rc == 0)
    rc = uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
  if (rc == 0) {
    /* uv_tcp_bind sets SO_REUSEADDR; a taken port surfaces at uv_listen. */
    step = "listen";
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)ss, 0);
  }
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv->listener, PEER_LISTEN_BACKLOG, on_connection);
  if (rc < 0)
    fprintf(stderr, PROG ": %s: %s\n", step, uv_strerror(rc));
  return rc;
}

/* Exit reclaims the connections: closing 10,000 handles one by one would
 * only delay the shutdown the benchmark is waiting for. */
int main(int argc, char **argv) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (peer_listen_addr(PROG, argc, argv, &ss, &len) < 0)
    return 1;
  signal(SIGPIPE, SIG_IGN); /* libuv writes with write(2), not MSG_NOSIGNAL */
  server_t srv = {0};
  if (setup(&srv, &ss) < 0)
    return 1;
  uv_os_fd_t listen_fd;
  int rc = uv_fileno((const uv_handle_t *)&srv.listener, &listen_fd);
  if (rc == 0)
    rc = peer_announce(PROG, listen_fd);
  if (rc < 0) {
    /* On Unix a libuv error is -errno, as peer_announce's is. */
    fprintf(stderr, PROG ": getsockname: %s\n", uv_strerror(rc));
    return 1;
  }
  uv_run(srv.loop, UV_RUN_DEFAULT); /* returns after uv_stop */
  return 0;
}
