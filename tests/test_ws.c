/* WebSocket: keel's server (both styles) against keel's client and against
 * a raw client that writes frames byte by byte as given; the opening
 * handshake's refusals, messages of every size whole and fragmented,
 * control frames, protocol errors and their close codes, full duplex with
 * several senders, liveness (ping interval, pong deadline, idle timeout),
 * the drain (1001), permessage-deflate, subprotocols, the origin hook, and
 * wss://. On io_uring, epoll and the lab network (many seeds). */
#define KT_GUARD_MS 60000
#include "http-test.h"
#include "ws-internal.h"

static char certs[512];

/* ---- The server ---------------------------------------------------------------- */

typedef struct srv_cfg {
  keel_ws_opts_t ws;
  bool sequential;
  int accepted; /* upgrades that succeeded */
  int ended;    /* sequential handlers that finished */
} srv_cfg_t;

static int echo_msg(keel_ws_t *ws, int op, const void *data, size_t len, void *ctx) {
  (void)ctx;
  return keel_ws_send(ws, op, data, len);
}

static int ws_handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  srv_cfg_t *cfg = ctx;
  if (!cfg->sequential) {
    cfg->ws.on_message = echo_msg;
    int rc = keel_ws_accept(req, res, &cfg->ws, NULL);
    if (rc == 0)
      cfg->accepted++;
    return keel_http_responded(res) ? 0 : rc;
  }
  keel_ws_t *ws;
  cfg->ws.on_message = NULL;
  int rc = keel_ws_accept(req, res, &cfg->ws, &ws);
  if (rc < 0)
    return keel_http_responded(res) ? 0 : rc;
  cfg->accepted++;
  const void *data;
  size_t len;
  while ((rc = keel_ws_recv(ws, &data, &len)) > 0)
    if (keel_ws_send(ws, rc, data, len) < 0)
      break;
  keel_ws_close(ws, 0, NULL);
  cfg->ended++;
  return 0;
}

static int start(kt_server_t *srv, srv_cfg_t *cfg) {
  keel_http_server_opts_t o = {.handler = ws_handler, .ctx = cfg};
  return kt_server_start(srv, &o);
}

static void url_of(const kt_server_t *srv, char *buf, size_t len, const char *scheme) {
  snprintf(buf, len, "%s://%s/", scheme, srv->addr);
}

/* ---- The raw client -------------------------------------------------------------- */

static int raw_upgrade(kt_server_t *srv, kt_conn_t *c, const char *extra) {
  CHECK_RC(kt_connect(srv, c));
  char req[1024];
  snprintf(req, sizeof req,
           "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
           extra ? extra : "");
  CHECK_RC(kt_send(c, req));
  kt_resp_t r;
  CHECK_RC(kt_response(c, &r, false));
  CHECK_EQ(r.status, 101);
  CHECK(kt_field(&r, "Sec-WebSocket-Accept") &&
        strcmp(kt_field(&r, "Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
  kt_resp_free(&r);
  return 0;
}

/* Writes one frame: masked with a fixed key unless unmasked is set.
 * Returns 0 or the write's error. */
static int raw_frame_rc(kt_conn_t *c, bool fin, unsigned rsv, unsigned op, const void *p, size_t n,
                        bool unmasked) {
  uint8_t head[WS_MAX_HEAD];
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  size_t hl = ws_frame_head(head, fin, rsv, op, n, unmasked ? NULL : key);
  uint8_t *buf = malloc(hl + n + 1);
  if (!buf)
    return -ENOMEM;
  memcpy(buf, head, hl);
  if (unmasked)
    memcpy(buf + hl, p, n);
  else
    ws_mask(buf + hl, p, n, key, 0);
  int rc = keel_write_all(c->s, buf, hl + n, NULL);
  free(buf);
  return rc;
}

static int raw_frame(kt_conn_t *c, bool fin, unsigned rsv, unsigned op, const void *p, size_t n,
                     bool unmasked) {
  CHECK_RC(raw_frame_rc(c, fin, rsv, op, p, n, unmasked));
  return 0;
}

/* Reads one frame from the server (unmasked): its opcode, payload into
 * buf (cap bytes). Returns the payload length, or a negative errno. */
static long raw_read(kt_conn_t *c, int *op, uint8_t *buf, size_t cap) {
  uint8_t h[WS_MAX_HEAD];
  size_t have = 0;
  ws_frame_t f;
  int hl;
  for (;;) {
    hl = ws_frame_parse(h, have, &f);
    if (hl != 0)
      break;
    int rc = keel_read_exact(c->s, h + have, 1, NULL);
    if (rc < 0)
      return rc;
    have++;
  }
  if (hl < 0 || f.masked || f.len > cap)
    return -EPROTO;
  *op = f.opcode;
  int rc = keel_read_exact(c->s, buf, (size_t)f.len, NULL);
  return rc < 0 ? rc : (long)f.len;
}

/* Expects a close frame with code, then the end of the connection. */
static int expect_close(kt_conn_t *c, int code) {
  uint8_t buf[200];
  int op = 0;
  long n;
  while ((n = raw_read(c, &op, buf, sizeof buf)) >= 0 && op != KEEL_WS_CLOSE)
    ;
  CHECK(n >= 2);
  CHECK_EQ(buf[0] << 8 | buf[1], code);
  CHECK(kt_closed(c));
  return 0;
}

/* ---- Cases ----------------------------------------------------------------------- */

static uint8_t *pattern(size_t n, unsigned salt) {
  uint8_t *p = malloc(n + 1);
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(i * 31 + salt + (i >> 9));
  return p;
}

static int client_echoes(keel_ws_t *ws) {
  static const size_t sizes[] = {0, 1, 125, 126, 127, 4096, 16384, 65535, 65536, 300000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    uint8_t *p = pattern(sizes[i], (unsigned)i);
    CHECK_RC(keel_ws_send(ws, KEEL_WS_BINARY, p, sizes[i]));
    const void *d;
    size_t n;
    CHECK_EQ(keel_ws_recv(ws, &d, &n), KEEL_WS_BINARY);
    CHECK_EQ(n, sizes[i]);
    CHECK(n == 0 || memcmp(d, p, n) == 0);
    free(p);
  }
  const char *text = "h\xc3\xa9llo w\xf0\x9f\x98\x80rld";
  CHECK_RC(keel_ws_send(ws, KEEL_WS_TEXT, text, strlen(text)));
  const void *d;
  size_t n;
  CHECK_EQ(keel_ws_recv(ws, &d, &n), KEEL_WS_TEXT);
  CHECK(n == strlen(text) && memcmp(d, text, n) == 0);
  /* Fragmented, split inside a code point. */
  CHECK_RC(keel_ws_send_part(ws, KEEL_WS_TEXT, text, 2, false));
  CHECK_RC(keel_ws_ping(ws, "between", 7));
  CHECK_RC(keel_ws_send_part(ws, KEEL_WS_CONTINUATION, text + 2, 9, false));
  CHECK_RC(keel_ws_send_part(ws, KEEL_WS_CONTINUATION, text + 11, strlen(text) - 11, true));
  CHECK_EQ(keel_ws_recv(ws, &d, &n), KEEL_WS_TEXT);
  CHECK(n == strlen(text) && memcmp(d, text, n) == 0);
  return 0;
}

static int echo_case(void *arg) {
  srv_cfg_t *cfg = arg;
  kt_server_t srv;
  CHECK_RC(start(&srv, cfg));
  char url[128];
  url_of(&srv, url, sizeof url, "ws");
  for (int round = 0; round < 2; round++) {
    keel_ws_t *ws;
    keel_ws_opts_t co = {.deflate = cfg->ws.deflate};
    CHECK_RC(keel_ws_connect(url, &co, &ws));
    CHECK_EQ(keel_ws_deflate(ws, NULL), cfg->ws.deflate.enable);
    if (client_echoes(ws) != 0)
      return -EPROTO;
    CHECK_RC(keel_ws_shutdown(ws, 4321, "done"));
    const void *d;
    size_t n;
    CHECK_EQ(keel_ws_recv(ws, &d, &n), 0);
    CHECK_EQ(keel_ws_close_code(ws), 4321); /* echoed */
    CHECK_RC(keel_ws_close(ws, 0, NULL));
  }
  CHECK_EQ(cfg->accepted, 2);
  return kt_server_stop(&srv);
}

static int echo_run(bool sequential, bool deflate) {
  srv_cfg_t cfg = {.sequential = sequential};
  cfg.ws.deflate.enable = deflate;
  return echo_case(&cfg);
}
static int echo_msg_case(void *arg) { return (void)arg, echo_run(false, false); }
static int echo_seq_case(void *arg) { return (void)arg, echo_run(true, false); }
static int echo_deflate_case(void *arg) { return (void)arg, echo_run(false, true); }

/* Pieces: a message far over max_message goes through keel_ws_recv_part
 * uncompressed as its frames arrive; a compressed one is inflated whole. */
static int pieces_run(bool deflate) {
  srv_cfg_t cfg = {0};
  cfg.ws.deflate.enable = deflate;
  kt_server_t srv;
  CHECK_RC(start(&srv, &cfg));
  char url[128];
  url_of(&srv, url, sizeof url, "ws");
  keel_ws_opts_t co = {.max_message = deflate ? 400000 : 1000};
  co.deflate.enable = deflate;
  keel_ws_t *ws;
  CHECK_RC(keel_ws_connect(url, &co, &ws));
  size_t big = 300000;
  uint8_t *p = pattern(big, 7), *got = malloc(big);
  CHECK_RC(keel_ws_send_part(ws, KEEL_WS_BINARY, p, 1000, false));
  CHECK_RC(keel_ws_send_part(ws, KEEL_WS_CONTINUATION, p + 1000, big - 1000, true));
  size_t have = 0;
  int pieces = 0;
  for (;;) {
    keel_ws_part_t part;
    ssize_t n = keel_ws_recv_part(ws, got + have, 777 < big - have ? 777 : big - have, &part);
    CHECK(n >= 0 && n != KEEL_WS_CLOSED);
    CHECK_EQ(part.opcode, KEEL_WS_BINARY);
    CHECK_EQ(part.first, pieces == 0);
    have += (size_t)n;
    pieces++;
    if (part.last)
      break;
    CHECK(have < big);
  }
  CHECK_EQ(have, big);
  CHECK(memcmp(got, p, big) == 0);
  /* Text split inside code points, then an empty message. */
  const char *text = "\xe2\x82\xac\xf0\x9f\x98\x80";
  CHECK_RC(keel_ws_send(ws, KEEL_WS_TEXT, text, strlen(text)));
  char t[16];
  size_t tl = 0;
  for (;;) {
    keel_ws_part_t part;
    ssize_t n = keel_ws_recv_part(ws, t + tl, 2, &part);
    CHECK(n >= 0 && n != KEEL_WS_CLOSED);
    CHECK_EQ(part.opcode, KEEL_WS_TEXT);
    tl += (size_t)n;
    if (part.last)
      break;
  }
  CHECK(tl == strlen(text) && memcmp(t, text, tl) == 0);
  CHECK_RC(keel_ws_send(ws, KEEL_WS_BINARY, "", 0));
  keel_ws_part_t part;
  CHECK_EQ(keel_ws_recv_part(ws, t, sizeof t, &part), 0);
  CHECK(part.first && part.last && part.opcode == KEEL_WS_BINARY);
  CHECK_RC(keel_ws_shutdown(ws, KEEL_WS_NORMAL, NULL));
  CHECK_EQ(keel_ws_recv_part(ws, t, sizeof t, &part), KEEL_WS_CLOSED);
  CHECK_RC(keel_ws_close(ws, 0, NULL));
  free(p);
  free(got);
  return kt_server_stop(&srv);
}
static int pieces_case(void *arg) { return (void)arg, pieces_run(false); }
static int pieces_deflate_case(void *arg) { return (void)arg, pieces_run(true); }

/* Refused upgrades: their statuses, and the server goes on. */
static int handshake_case(void *arg) {
  (void)arg;
  srv_cfg_t cfg = {0};
  kt_server_t srv;
  CHECK_RC(start(&srv, &cfg));
  static const struct {
    const char *req;
    int status;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426},
      {"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
       426},
      {"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: short==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
       "Content-Length: 0\r\n\r\n",
       400},
      {"GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       400},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kt_conn_t c = {0};
    CHECK_RC(kt_connect(&srv, &c));
    kt_resp_t r;
    KT_EXCHANGE(&c, cases[i].req, &r, cases[i].status);
    if (cases[i].status == 426)
      CHECK(kt_field(&r, "Sec-WebSocket-Version") &&
            strcmp(kt_field(&r, "Sec-WebSocket-Version"), "13") == 0);
    kt_resp_free(&r);
    kt_disconnect(&c);
  }
  CHECK_EQ(cfg.accepted, 0);
  /* And a good one still works, with frames sent along with the request. */
  kt_conn_t c = {0};
  CHECK_RC(raw_upgrade(&srv, &c, NULL));
  CHECK_RC(raw_frame(&c, true, 0, KEEL_WS_TEXT, "hi", 2, false));
  uint8_t buf[16];
  int op;
  CHECK_EQ(raw_read(&c, &op, buf, sizeof buf), 2);
  CHECK_EQ(op, KEEL_WS_TEXT);
  CHECK(memcmp(buf, "hi", 2) == 0);
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

/* Protocol errors: each ends in its close code and the TCP close. */
static int errors_case(void *arg) {
  srv_cfg_t *cfg = arg;
  cfg->ws.max_message = 1000;
  kt_server_t srv;
  CHECK_RC(start(&srv, cfg));
  uint8_t big[1001] = {0};
  static const uint8_t bad_utf8[] = {'a', 0xed, 0xa0, 0x80};
  static const uint8_t close_1[] = {0x03};
  static const uint8_t close_1004[] = {0x03, 0xec};
  static const uint8_t close_bad_reason[] = {0x03, 0xe8, 0xff};
  struct {
    bool fin;
    unsigned rsv, op;
    const void *p;
    size_t n;
    bool unmasked;
    int code;
  } cases[] = {
      {true, 0, KEEL_WS_TEXT, "x", 1, true, 1002},          /* unmasked from a client */
      {true, 4, KEEL_WS_TEXT, "x", 1, false, 1002},         /* RSV1 without an extension */
      {true, 0, 3, "x", 1, false, 1002},                    /* reserved opcode */
      {true, 0, 0xb, "", 0, false, 1002},                   /* reserved control opcode */
      {true, 0, KEEL_WS_CONTINUATION, "x", 1, false, 1002}, /* nothing to continue */
      {false, 0, KEEL_WS_PING, "", 0, false, 1002},         /* fragmented control frame */
      {true, 0, KEEL_WS_TEXT, bad_utf8, sizeof bad_utf8, false, 1007},
      {true, 0, KEEL_WS_BINARY, big, sizeof big, false, 1009},
      {true, 0, KEEL_WS_CLOSE, close_1, 1, false, 1002},
      {true, 0, KEEL_WS_CLOSE, close_1004, 2, false, 1002},
      {true, 0, KEEL_WS_CLOSE, close_bad_reason, 3, false, 1007},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kt_conn_t c = {0};
    CHECK_RC(raw_upgrade(&srv, &c, NULL));
    CHECK_RC(raw_frame(&c, cases[i].fin, cases[i].rsv, cases[i].op, cases[i].p, cases[i].n,
                       cases[i].unmasked));
    if (expect_close(&c, cases[i].code) != 0) {
      fprintf(stderr, "case %zu\n", i);
      return -EPROTO;
    }
    kt_disconnect(&c);
  }
  /* A data frame inside a fragmented message; a 126-byte ping. */
  kt_conn_t c = {0};
  CHECK_RC(raw_upgrade(&srv, &c, NULL));
  CHECK_RC(raw_frame(&c, false, 0, KEEL_WS_TEXT, "a", 1, false));
  CHECK_RC(raw_frame(&c, true, 0, KEEL_WS_TEXT, "b", 1, false));
  CHECK_RC(expect_close(&c, 1002));
  kt_disconnect(&c);
  CHECK_RC(raw_upgrade(&srv, &c, NULL));
  uint8_t ping[4] = {0x89, 0xfe, 0x00, 0x7e}; /* 126 bytes: too long for control */
  CHECK_RC(keel_write_all(c.s, ping, sizeof ping, NULL));
  CHECK_RC(expect_close(&c, 1002));
  kt_disconnect(&c);
  /* A ping is answered with its payload; a close with its code. */
  CHECK_RC(raw_upgrade(&srv, &c, NULL));
  CHECK_RC(raw_frame(&c, true, 0, KEEL_WS_PING, "abc", 3, false));
  uint8_t buf[200];
  int op;
  CHECK_EQ(raw_read(&c, &op, buf, sizeof buf), 3);
  CHECK_EQ(op, KEEL_WS_PONG);
  CHECK(memcmp(buf, "abc", 3) == 0);
  static const uint8_t bye[] = {0x0f, 0xa0, 'o', 'k'}; /* 4000 */
  CHECK_RC(raw_frame(&c, true, 0, KEEL_WS_CLOSE, bye, sizeof bye, false));
  CHECK_RC(expect_close(&c, 4000));
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

static int errors_msg_case(void *arg) {
  (void)arg;
  srv_cfg_t cfg = {0};
  return errors_case(&cfg);
}
static int errors_seq_case(void *arg) {
  (void)arg;
  srv_cfg_t cfg = {.sequential = true};
  return errors_case(&cfg);
}

/* Full duplex: a receiver and several senders on one WebSocket; every
 * fragmented message arrives whole, none interleaved. */
typedef struct sender {
  keel_ws_t *ws;
  int id, count;
} sender_t;

static int sender_task(void *arg) {
  sender_t *s = arg;
  char part[64];
  for (int i = 0; i < s->count; i++) {
    int n = snprintf(part, sizeof part, "%d:%d:", s->id, i);
    CHECK_RC(keel_ws_send_part(s->ws, KEEL_WS_TEXT, part, (size_t)n, false));
    keel_yield();
    CHECK_RC(keel_ws_send_part(s->ws, KEEL_WS_CONTINUATION, "mid-", 4, false));
    keel_yield();
    CHECK_RC(keel_ws_send_part(s->ws, KEEL_WS_CONTINUATION, "end", 3, true));
  }
  return 0;
}

static int duplex_case(void *arg) {
  (void)arg;
  srv_cfg_t cfg = {0};
  kt_server_t srv;
  CHECK_RC(start(&srv, &cfg));
  char url[128];
  url_of(&srv, url, sizeof url, "ws");
  keel_ws_t *ws;
  CHECK_RC(keel_ws_connect(url, NULL, &ws));
  enum { SENDERS = 4, EACH = 50 };
  sender_t s[SENDERS];
  keel_scope_t *scope;
  CHECK_RC(keel_scope_open(NULL, &scope));
  for (int i = 0; i < SENDERS; i++) {
    s[i] = (sender_t){ws, i, EACH};
    CHECK_RC(keel_spawn(scope, sender_task, &s[i], NULL));
  }
  int next[SENDERS] = {0};
  for (int got = 0; got < SENDERS * EACH; got++) {
    const void *d;
    size_t n;
    CHECK_EQ(keel_ws_recv(ws, &d, &n), KEEL_WS_TEXT);
    int id, seq, used = 0;
    char text[64];
    snprintf(text, sizeof text, "%.*s", (int)n, (const char *)d);
    CHECK(sscanf(text, "%d:%d:%n", &id, &seq, &used) == 2);
    CHECK(id >= 0 && id < SENDERS);
    CHECK_EQ(seq, next[id]);
    next[id]++;
    CHECK(strcmp(text + used, "mid-end") == 0);
  }
  CHECK_RC(keel_scope_join(scope));
  keel_scope_close(scope);
  CHECK_RC(keel_ws_close(ws, KEEL_WS_NORMAL, NULL));
  return kt_server_stop(&srv);
}

/* The server's drain: every WebSocket gets 1001, in both styles. */
static int drain_case(void *arg) {
  (void)arg;
  for (int seq = 0; seq < 2; seq++) {
    srv_cfg_t cfg = {.sequential = seq};
    kt_server_t srv;
    CHECK_RC(start(&srv, &cfg));
    char url[128];
    url_of(&srv, url, sizeof url, "ws");
    keel_ws_t *ws[3];
    for (int i = 0; i < 3; i++) {
      CHECK_RC(keel_ws_connect(url, NULL, &ws[i]));
      CHECK_RC(keel_ws_send(ws[i], KEEL_WS_TEXT, "x", 1));
      const void *d;
      size_t n;
      CHECK_EQ(keel_ws_recv(ws[i], &d, &n), KEEL_WS_TEXT);
    }
    keel_scope_cancel(srv.scope, KEEL_CANCEL_USER);
    for (int i = 0; i < 3; i++) {
      const void *d;
      size_t n;
      CHECK_EQ(keel_ws_recv(ws[i], &d, &n), 0);
      CHECK_EQ(keel_ws_close_code(ws[i]), KEEL_WS_GOING_AWAY);
      CHECK_RC(keel_ws_close(ws[i], 0, NULL));
    }
    CHECK_RC(kt_server_stop(&srv));
    if (seq)
      CHECK_EQ(cfg.ended, 3);
  }
  return 0;
}

/* Liveness: the server pings a quiet client (answered by keel's client
 * without the application), drops one that never answers, and closes an
 * idle one with 1001. */
static int liveness_case(void *arg) {
  (void)arg;
  srv_cfg_t cfg = {0};
  cfg.ws.ping_interval_ms = 200;
  cfg.ws.pong_timeout_ms = 300;
  kt_server_t srv;
  CHECK_RC(start(&srv, &cfg));
  char url[128];
  url_of(&srv, url, sizeof url, "ws");
  keel_ws_t *ws;
  CHECK_RC(keel_ws_connect(url, NULL, &ws));
  /* Quiet for 1 s: pings come and are answered while this task waits. */
  keel_task_set_deadline(keel_now_ns() + 1000 * KEEL_NS_PER_MS);
  const void *d;
  size_t n;
  CHECK_EQ(keel_ws_recv(ws, &d, &n), -ETIMEDOUT);
  keel_task_set_deadline(KEEL_DEADLINE_NONE);
  CHECK_RC(keel_ws_send(ws, KEEL_WS_TEXT, "alive", 5));
  CHECK_EQ(keel_ws_recv(ws, &d, &n), KEEL_WS_TEXT);
  CHECK_RC(keel_ws_close(ws, 0, NULL));
  /* A raw client that never answers the ping: dropped. */
  kt_conn_t c = {0};
  CHECK_RC(raw_upgrade(&srv, &c, NULL));
  uint8_t buf[200];
  int op;
  CHECK(raw_read(&c, &op, buf, sizeof buf) >= 0);
  CHECK_EQ(op, KEEL_WS_PING);
  int64_t t0 = keel_now_ns();
  while (raw_read(&c, &op, buf, sizeof buf) >= 0)
    ;
  CHECK(keel_now_ns() - t0 >= 250 * KEEL_NS_PER_MS);
  kt_disconnect(&c);
  CHECK_RC(kt_server_stop(&srv));
  /* Idle timeout: close 1001. */
  srv_cfg_t idle = {0};
  idle.ws.idle_timeout_ms = 300;
  CHECK_RC(start(&srv, &idle));
  url_of(&srv, url, sizeof url, "ws");
  CHECK_RC(keel_ws_connect(url, NULL, &ws));
  CHECK_EQ(keel_ws_recv(ws, &d, &n), 0);
  CHECK_EQ(keel_ws_close_code(ws), KEEL_WS_GOING_AWAY);
  CHECK_RC(keel_ws_close(ws, 0, NULL));
  /* Data that comes after the server's close is dropped, not echoed, and
   * the close that follows it ends the connection. */
  kt_conn_t c2 = {0};
  CHECK_RC(raw_upgrade(&srv, &c2, NULL));
  CHECK(raw_read(&c2, &op, buf, sizeof buf) >= 2);
  CHECK_EQ(op, KEEL_WS_CLOSE);
  CHECK_RC(raw_frame(&c2, true, 0, KEEL_WS_BINARY, "late", 4, false));
  CHECK_RC(raw_frame(&c2, true, 0, KEEL_WS_TEXT, "later", 5, false));
  static const uint8_t bye[] = {0x03, 0xe9};
  CHECK_RC(raw_frame(&c2, true, 0, KEEL_WS_CLOSE, bye, sizeof bye, false));
  CHECK(kt_closed(&c2));
  kt_disconnect(&c2);
  return kt_server_stop(&srv);
}

/* A peer that sends pings and reads nothing: the pongs it does not take
 * end it after the close timeout, and the server goes on (lab network,
 * small pipes so that they fill at once). */
static int deaf_peer_case(void *arg) {
  (void)arg;
  keel_lab_net_faults_t f = {.conn = {.capacity = 4096}};
  CHECK_RC(keel_lab_net_faults(&f));
  srv_cfg_t cfg = {0};
  cfg.ws.close_timeout_ms = 500;
  kt_server_t srv;
  CHECK_RC(start(&srv, &cfg));
  kt_conn_t c = {0};
  CHECK_RC(raw_upgrade(&srv, &c, NULL));
  uint8_t payload[125] = {0};
  int64_t t0 = keel_now_ns();
  int sent = 0, rc = 0;
  keel_task_set_deadline(t0 + 5000 * KEEL_NS_PER_MS);
  while (rc == 0 && sent < 100000) {
    rc = raw_frame_rc(&c, true, 0, KEEL_WS_PING, payload, sizeof payload, false);
    sent++;
  }
  keel_task_set_deadline(KEEL_DEADLINE_NONE);
  int64_t took = keel_now_ns() - t0;
  CHECK(took >= 400 * KEEL_NS_PER_MS); /* the server waited for the pongs to be taken... */
  CHECK(took < 4000 * KEEL_NS_PER_MS); /* ...for the close timeout, not for ever */
  kt_disconnect(&c);
  /* Another client is served as ever. */
  char url[128];
  url_of(&srv, url, sizeof url, "ws");
  keel_ws_t *ws;
  CHECK_RC(keel_ws_connect(url, NULL, &ws));
  CHECK_RC(keel_ws_send(ws, KEEL_WS_TEXT, "ok", 2));
  const void *d;
  size_t n;
  CHECK_EQ(keel_ws_recv(ws, &d, &n), KEEL_WS_TEXT);
  CHECK_RC(keel_ws_close(ws, 0, NULL));
  return kt_server_stop(&srv);
}

/* Upgraded connections still count against the server's max_conns until
 * they end. */
static int max_conns_case(void *arg) {
  (void)arg;
  for (int seq = 0; seq < 2; seq++) {
    srv_cfg_t cfg = {.sequential = seq};
    keel_http_server_opts_t o = {.handler = ws_handler, .ctx = &cfg, .max_conns = 2};
    kt_server_t srv;
    CHECK_RC(kt_server_start(&srv, &o));
    char url[128];
    url_of(&srv, url, sizeof url, "ws");
    keel_ws_t *a, *b, *c;
    CHECK_RC(keel_ws_connect(url, NULL, &a));
    CHECK_RC(keel_ws_connect(url, NULL, &b));
    const void *d;
    size_t n;
    CHECK_RC(keel_ws_send(b, KEEL_WS_TEXT, "b", 1));
    CHECK_EQ(keel_ws_recv(b, &d, &n), KEEL_WS_TEXT);
    CHECK(keel_ws_connect(url, NULL, &c) < 0); /* closed at once: the limit */
    CHECK_RC(keel_ws_close(a, 0, NULL));
    /* The server frees a's slot once its close is done. */
    int rc = -1;
    for (int i = 0; i < 100 && rc < 0; i++) {
      keel_sleep_ms(10);
      rc = keel_ws_connect(url, NULL, &c);
    }
    CHECK_RC(rc);
    CHECK_RC(keel_ws_close(c, 0, NULL));
    CHECK_RC(keel_ws_close(b, 0, NULL));
    CHECK_RC(kt_server_stop(&srv));
  }
  return 0;
}

/* Subprotocols and the origin hook. */
static bool origin_ok(const char *origin, void *ctx) {
  (void)ctx;
  return origin && strcmp(origin, "https://good.example") == 0;
}

static int options_case(void *arg) {
  (void)arg;
  static const char *const mine[] = {"v2.chat", "v1.chat", NULL};
  srv_cfg_t cfg = {0};
  cfg.ws.subprotocols = mine;
  cfg.ws.check_origin = origin_ok;
  kt_server_t srv;
  CHECK_RC(start(&srv, &cfg));
  char url[128];
  url_of(&srv, url, sizeof url, "ws");
  static const char *const offer[] = {"v1.chat", "v2.chat", NULL};
  keel_ws_opts_t co = {.subprotocols = offer, .origin = "https://good.example"};
  keel_ws_t *ws;
  CHECK_RC(keel_ws_connect(url, &co, &ws));
  CHECK(keel_ws_subprotocol(ws) && strcmp(keel_ws_subprotocol(ws), "v2.chat") == 0);
  CHECK_RC(keel_ws_close(ws, 0, NULL));
  char why[128];
  keel_ws_opts_t bad = {.origin = "https://evil.example", .why = why, .why_len = sizeof why};
  CHECK_EQ(keel_ws_connect(url, &bad, &ws), -EPROTO);
  CHECK(strstr(why, "403") != NULL);
  return kt_server_stop(&srv);
}

static int wss_case(void *arg) {
  (void)arg;
  char cert[600], key[600], ca[600];
  snprintf(cert, sizeof cert, "%s/server.pem", certs);
  snprintf(key, sizeof key, "%s/server.key", certs);
  snprintf(ca, sizeof ca, "%s/ca.pem", certs);
  keel_tls_ctx_opts_t so = {.server = true, .cert = {.cert_file = cert, .key_file = key}};
  keel_tls_ctx_t *sctx, *cctx;
  char why[KEEL_TLS_REASON_MAX];
  CHECK_RC(keel_tls_ctx_open(&so, &sctx, why, sizeof why));
  keel_tls_ctx_opts_t co = {.ca_file = ca};
  CHECK_RC(keel_tls_ctx_open(&co, &cctx, why, sizeof why));
  srv_cfg_t cfg = {0};
  keel_http_server_opts_t o = {.handler = ws_handler, .ctx = &cfg, .tls = sctx};
  kt_server_t srv;
  CHECK_RC(kt_server_start(&srv, &o));
  char url[160];
  const char *port = strrchr(srv.addr, ':');
  snprintf(url, sizeof url, "wss://localhost%s/", port);
  char target[160];
  snprintf(target, sizeof target, "localhost%s:127.0.0.1", port);
  const char *resolve[] = {target, NULL};
  keel_ws_opts_t wo = {.tls = cctx, .resolve = resolve};
  keel_ws_t *ws;
  CHECK_RC(keel_ws_connect(url, &wo, &ws));
  CHECK(keel_tls_of(keel_ws_stream(ws)) != NULL);
  if (client_echoes(ws) != 0)
    return -EPROTO;
  CHECK_RC(keel_ws_close(ws, 0, NULL));
  CHECK_RC(kt_server_stop(&srv));
  keel_tls_ctx_close(sctx);
  keel_tls_ctx_close(cctx);
  return 0;
}

/* ---- cmocka ---------------------------------------------------------------------- */

#define CASE(name)                        \
  static void test_##name(void **state) { \
    (void)state;                          \
    kt_run_body(name##_case, NULL, 1);    \
  }
CASE(echo_msg)
CASE(echo_seq)
CASE(echo_deflate)
CASE(handshake)
CASE(pieces)
CASE(pieces_deflate)
CASE(errors_msg)
CASE(errors_seq)
CASE(duplex)
CASE(drain)
CASE(liveness)
CASE(options)
CASE(max_conns)

static void test_deaf_peer(void **state) {
  (void)state;
  if (!kt_backend_selected(KEEL_BACKEND_LAB))
    skip();
  for (uint64_t seed = 1; seed <= 8; seed++)
    kt_run_lab_body(deaf_peer_case, NULL, seed);
}

static void test_wss(void **state) {
  (void)state;
  const char *dir = getenv("KEEL_TEST_CERTS");
  if (!dir || !*dir) {
    skip();
    return;
  }
  snprintf(certs, sizeof certs, "%s", dir);
  kt_run_body(wss_case, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_echo_msg),
      cmocka_unit_test(test_echo_seq),
      cmocka_unit_test(test_echo_deflate),
      cmocka_unit_test(test_handshake),
      cmocka_unit_test(test_errors_msg),
      cmocka_unit_test(test_errors_seq),
      cmocka_unit_test(test_duplex),
      cmocka_unit_test(test_drain),
      cmocka_unit_test(test_liveness),
      cmocka_unit_test(test_options),
      cmocka_unit_test(test_wss),
      cmocka_unit_test(test_pieces),
      cmocka_unit_test(test_pieces_deflate),
      cmocka_unit_test(test_deaf_peer),
      cmocka_unit_test(test_max_conns),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
