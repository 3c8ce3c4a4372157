/* ws-echo-lws: a WebSocket echo server on libwebsockets, a benchmark peer
 * for keel (tools/bench --suite ws).
 *
 *   ws-echo-lws [--host H] [--port P]
 *
 * What a careful C programmer writes with libwebsockets: one context, one
 * service thread on lws's own event loop (poll: the default), one protocol
 * that upgrades any path, no extensions (so no permessage-deflate). Every
 * message goes back with its opcode. A message is gathered from lws's
 * receive callbacks into the connection's queue and written whole from the
 * writeable callback; the queue is one buffer reused from message to
 * message (written messages are dropped from its front when room is
 * needed), so nothing is allocated per message once it has grown to fit
 * the messages in flight, and reading stops (lws_rx_flow_control) while it holds more
 * than QUEUE_HIGH bytes. Tuned for the benchmark's 16 KiB messages: lws
 * reads the socket up to 64 KiB at a time (pt_serv_buf_size; the default
 * 4 KiB would take four reads per message), hands a connection up to 16
 * KiB per receive callback (rx_buffer_size) and sends a frame in one
 * send() (tx_packet_size). Prints "ws-echo-lws listening on ADDR:PORT"
 * once ready; SIGINT or SIGTERM exits 0, a startup failure exits 1. */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libwebsockets.h>

#include "peer-common.h"

#define PROG "ws-echo-lws"
#define SERVICE_BUF_SIZE (64 * 1024)
#define RX_BUFFER_SIZE (16 * 1024)
#define TX_PACKET_SIZE (64 * 1024)
#define QUEUE_HIGH (1024 * 1024) /* queued bytes that pause reading */

/* A queued message: this record, LWS_PRE bytes of room for lws's frame
 * header, then the payload. */
typedef struct msg_head {
  size_t len;
  bool binary;
} msg_head_t;

#define RECORD_HEAD ((sizeof(msg_head_t) + 15) / 16 * 16)

/* Per connection (lws allocates it zeroed, frees it after CLOSED). The
 * queue is buf[head, tail); a message still arriving is the last record,
 * from `open` on. */
typedef struct session {
  uint8_t *buf;
  size_t cap, head, tail;
  size_t open; /* offset of the record being received, or SIZE_MAX */
  bool paused;
} session_t;

/* The signal handler's way to the service loop. */
static volatile sig_atomic_t stop;
static struct lws_context *service_context;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
  if (service_context != NULL)
    lws_cancel_service(service_context); /* a write to lws's wakeup pipe */
}

static msg_head_t *record_at(session_t *s, size_t off) { return (msg_head_t *)(s->buf + off); }

/* Room for more bytes at the tail. The written messages before head are
 * dropped (what is left moves to the front) when they are at least as
 * many bytes as those that move, so each byte moves O(1) times; else the
 * buffer grows. */
static int reserve(session_t *s, size_t more) {
  if (s->tail + more <= s->cap)
    return 0;
  if (s->head > 0 && s->head >= s->tail - s->head) {
    memmove(s->buf, s->buf + s->head, s->tail - s->head);
    s->tail -= s->head;
    if (s->open != SIZE_MAX)
      s->open -= s->head;
    s->head = 0;
    if (s->tail + more <= s->cap)
      return 0;
  }
  size_t cap = s->cap ? s->cap : 4096;
  while (s->tail + more > cap)
    cap *= 2;
  uint8_t *buf = realloc(s->buf, cap);
  if (buf == NULL)
    return -1;
  s->buf = buf;
  s->cap = cap;
  return 0;
}

/* Appends a piece of the message being received; at its last piece the
 * message is queued and the connection asks to be written. */
static int on_receive(struct lws *wsi, session_t *s, const void *data, size_t len) {
  if (s->open == SIZE_MAX) {
    if (reserve(s, RECORD_HEAD + LWS_PRE) < 0)
      return -1;
    s->open = s->tail;
    *record_at(s, s->open) = (msg_head_t){.len = 0, .binary = lws_frame_is_binary(wsi) != 0};
    s->tail += RECORD_HEAD + LWS_PRE;
  }
  if (reserve(s, len) < 0)
    return -1;
  memcpy(s->buf + s->tail, data, len);
  s->tail += len;
  record_at(s, s->open)->len += len;
  if (!lws_is_final_fragment(wsi))
    return 0;
  s->open = SIZE_MAX;
  if (!s->paused && s->tail - s->head > QUEUE_HIGH) {
    lws_rx_flow_control(wsi, 0);
    s->paused = true;
  }
  lws_callback_on_writable(wsi);
  return 0;
}

/* Writes the oldest queued message. */
static int on_writeable(struct lws *wsi, session_t *s) {
  if (s->head == s->tail || s->head == s->open)
    return 0;
  msg_head_t *m = record_at(s, s->head);
  uint8_t *payload = s->buf + s->head + RECORD_HEAD + LWS_PRE;
  if (lws_write(wsi, payload, m->len, m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < (int)m->len)
    return -1;
  s->head += RECORD_HEAD + LWS_PRE + m->len;
  if (s->head == s->tail) { /* empty: reuse the buffer from its start */
    s->head = s->tail = 0;
  } else if (s->head != s->open) {
    lws_callback_on_writable(wsi);
  }
  if (s->paused && s->tail - s->head <= QUEUE_HIGH / 2) {
    lws_rx_flow_control(wsi, 1);
    s->paused = false;
  }
  return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  session_t *s = user;
  switch (reason) {
  case LWS_CALLBACK_ESTABLISHED:
    s->open = SIZE_MAX;
    return 0;
  case LWS_CALLBACK_RECEIVE:
    return on_receive(wsi, s, in, len);
  case LWS_CALLBACK_SERVER_WRITEABLE:
    return on_writeable(wsi, s);
  case LWS_CALLBACK_CLOSED:
    free(s->buf);
    s->buf = NULL;
    return 0;
  default:
    return lws_callback_http_dummy(wsi, reason, user, in, len);
  }
}

static const struct lws_protocols protocols[] = {
    {.name = "echo",
     .callback = callback,
     .per_session_data_size = sizeof(session_t),
     .rx_buffer_size = RX_BUFFER_SIZE,
     .tx_packet_size = TX_PACKET_SIZE},
    {0},
};

/* The context and its one vhost, listening on host:port. Returns the
 * context, or NULL after saying why. */
static struct lws_context *open_server(const char *host, int port, struct lws_vhost **vhost) {
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
  info.pt_serv_buf_size = SERVICE_BUF_SIZE;
  info.count_threads = 1;
  struct lws_context *ctx = lws_create_context(&info);
  if (ctx == NULL) {
    fprintf(stderr, PROG ": lws_create_context failed\n");
    return NULL;
  }
  info.port = port; /* 0: any free one */
  info.iface = host;
  info.protocols = protocols;
  info.vhost_name = "default";
  info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
  if (strchr(host, ':') == NULL)
    info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
  *vhost = lws_create_vhost(ctx, &info);
  if (*vhost == NULL) {
    fprintf(stderr, PROG ": cannot listen on %s port %d\n", host, port);
    lws_context_destroy(ctx);
    return NULL;
  }
  return ctx;
}

/* Exit reclaims the connections, as in the other peers. */
int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 7000;
  if (peer_parse_args(PROG, argc, argv, &host, &port) < 0)
    return 1;
  lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
  struct lws_vhost *vhost = NULL;
  struct lws_context *ctx = open_server(host, port, &vhost);
  if (ctx == NULL)
    return 1;
  service_context = ctx;
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  const char *fmt =
      strchr(host, ':') != NULL ? PROG " listening on [%s]:%d\n" : PROG " listening on %s:%d\n";
  printf(fmt, host, lws_get_vhost_listen_port(vhost));
  fflush(stdout);
  while (!stop && lws_service(ctx, 0) >= 0)
    ;
  return 0;
}
