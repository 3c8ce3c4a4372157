/* The client's opening handshake (RFC 6455 §4.1): connect, TLS for
 * wss://, the upgrade request, and every check of the server's answer. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "client-internal.h"
#include "handshake.h"

#define WS_DEFAULT_MAX_HANDSHAKE ((size_t)16 * 1024)
#define WS_REQUEST_MAX 8192
#define WS_MAX_RESPONSE_FIELDS 64

static int why(const keel_ws_opts_t *o, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int why(const keel_ws_opts_t *o, int err, const char *fmt, ...) {
  if (o->why && o->why_len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->why, o->why_len, fmt, ap);
    va_end(ap);
  }
  return err;
}

/* Where to connect: host:port, or what a "host:port:address" entry of
 * opts->resolve says. */
static void connect_target(const keel_ws_opts_t *o, const hc_url_t *u, char *buf, size_t len) {
  for (const char *const *r = o->resolve; r && *r; r++) {
    const char *colon = strchr(*r, ':');
    if (!colon || (size_t)(colon - *r) != u->host_len || strncasecmp(*r, u->host, u->host_len))
      continue;
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end != ':' || port != u->port)
      continue;
    const char *addr = end + 1;
    bool v6 = strchr(addr, ':') && addr[0] != '[';
    snprintf(buf, len, v6 ? "[%s]:%u" : "%s:%u", addr, u->port);
    return;
  }
  snprintf(buf, len, u->ipv6 ? "[%.*s]:%u" : "%.*s:%u", (int)u->host_len, u->host, u->port);
}

static char *put(char *p, char *end, const char *s, size_t n) {
  if (!p || (size_t)(end - p) < n)
    return NULL;
  memcpy(p, s, n);
  return p + n;
}

static char *puts_(char *p, char *end, const char *s) { return put(p, end, s, strlen(s)); }

static bool field_ok(const char *s, size_t n, bool name) {
  if (name && n == 0)
    return false;
  for (size_t i = 0; i < n; i++)
    if (name ? !keel__http_token_char((unsigned char)s[i])
             : !keel__http_value_char((unsigned char)s[i]))
      return false;
  return true;
}

/* The request; the key it carries goes to key (24 characters + NUL). */
static int format_request(const keel_ws_opts_t *o, const hc_url_t *u, char *buf, size_t cap,
                          char key[25], size_t *len) {
  uint8_t raw[16];
  uint64_t r0 = keel_random(), r1 = keel_random();
  memcpy(raw, &r0, 8);
  memcpy(raw + 8, &r1, 8);
  EVP_EncodeBlock((unsigned char *)key, raw, 16);
  char *p = buf, *end = buf + cap;
  p = puts_(p, end, "GET ");
  p = u->target_len ? put(p, end, u->target, u->target_len) : puts_(p, end, "/");
  p = puts_(p, end, " HTTP/1.1\r\nHost: ");
  if (u->ipv6)
    p = puts_(p, end, "[");
  p = put(p, end, u->host, u->host_len);
  if (u->ipv6)
    p = puts_(p, end, "]");
  if (u->port != (u->tls ? 443 : 80)) {
    char port[8];
    snprintf(port, sizeof port, ":%u", u->port);
    p = puts_(p, end, port);
  }
  p = puts_(p, end, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
  p = put(p, end, key, 24);
  p = puts_(p, end, "\r\nSec-WebSocket-Version: 13\r\n");
  if (o->origin) {
    if (!field_ok(o->origin, strlen(o->origin), false))
      return -EINVAL;
    p = puts_(p, end, "Origin: ");
    p = puts_(p, end, o->origin);
    p = puts_(p, end, "\r\n");
  }
  if (o->subprotocols && o->subprotocols[0]) {
    p = puts_(p, end, "Sec-WebSocket-Protocol: ");
    for (const char *const *s = o->subprotocols; *s; s++) {
      if (!field_ok(*s, strlen(*s), true))
        return -EINVAL;
      if (s != o->subprotocols)
        p = puts_(p, end, ", ");
      p = puts_(p, end, *s);
    }
    p = puts_(p, end, "\r\n");
  }
  if (o->deflate.enable) {
    char offer[256];
    if (ws_pmd_client_offer(&o->deflate, offer, sizeof offer) < 0)
      return -EINVAL;
    p = puts_(p, end, "Sec-WebSocket-Extensions: ");
    p = puts_(p, end, offer);
    p = puts_(p, end, "\r\n");
  }
  for (size_t i = 0; i < o->nheaders; i++) {
    const keel_http_header_t *h = &o->headers[i];
    size_t nl = h->name_len ? h->name_len : strlen(h->name);
    size_t vl = h->value_len ? h->value_len : strlen(h->value);
    if (!field_ok(h->name, nl, true) || !field_ok(h->value, vl, false))
      return -EINVAL;
    p = put(p, end, h->name, nl);
    p = puts_(p, end, ": ");
    p = put(p, end, h->value, vl);
    p = puts_(p, end, "\r\n");
  }
  p = puts_(p, end, "\r\n");
  if (!p)
    return -EMSGSIZE;
  *len = (size_t)(p - buf);
  return 0;
}

/* Checks the response head (head_len bytes, ending in CRLF CRLF). */
static int check_response(const keel_ws_opts_t *o, char *head, size_t head_len, const char *key,
                          ws_pmd_params_t *pmd, bool *deflate, const char **proto) {
  char *p = head, *end = head + head_len;
  /* "HTTP/1.1 101 reason CRLF" */
  char *eol = memchr(p, '\n', head_len);
  if (head_len < 16 || memcmp(p, "HTTP/1.1 ", 9) != 0 || !eol || eol[-1] != '\r')
    return why(o, -EPROTO, "not an HTTP/1.1 response");
  if (p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
      p[12] != ' ')
    return why(o, -EPROTO, "a malformed status line");
  for (const char *r = p + 13; r < eol - 1; r++) /* reason-phrase (RFC 9112 §4) */
    if (!keel__http_value_char((unsigned char)*r))
      return why(o, -EPROTO, "a malformed status line");
  int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
  if (status != 101)
    return why(o, -EPROTO, "the server answered %d instead of 101", status);
  p = eol + 1;
  keel_http_header_t fields[WS_MAX_RESPONSE_FIELDS];
  size_t nf = 0;
  while (!(p + 2 <= end && p[0] == '\r' && p[1] == '\n')) {
    if (nf == WS_MAX_RESPONSE_FIELDS)
      return why(o, -EMSGSIZE, "too many fields in the response");
    if (keel__http_parse_field(&p, end, &fields[nf]) < 0)
      return why(o, -EPROTO, "a malformed field in the response");
    nf++;
  }
  bool upgrade = false, connection = false, accepted = false;
  const char *ext[16];
  size_t next = 0;
  char want[WS_ACCEPT_LEN + 1];
  if (keel__ws_accept_key(key, 24, want) < 0)
    return -ENOMEM;
  *proto = NULL;
  for (size_t i = 0; i < nf; i++) {
    const keel_http_header_t *h = &fields[i];
    if (strcasecmp(h->name, "upgrade") == 0)
      upgrade = upgrade || keel__ws_list_has(h->value, "websocket");
    else if (strcasecmp(h->name, "connection") == 0)
      connection = connection || keel__ws_list_has(h->value, "upgrade");
    else if (strcasecmp(h->name, "sec-websocket-accept") == 0) {
      if (accepted || strcmp(h->value, want) != 0)
        return why(o, -EPROTO, "a wrong Sec-WebSocket-Accept");
      accepted = true;
    } else if (strcasecmp(h->name, "sec-websocket-protocol") == 0) {
      bool offered = false;
      for (const char *const *s = o->subprotocols; s && *s && !offered; s++)
        offered = strcmp(*s, h->value) == 0;
      if (*proto || !offered)
        return why(o, -EPROTO, "a subprotocol not offered: %s", h->value);
      *proto = h->value;
    } else if (strcasecmp(h->name, "sec-websocket-extensions") == 0) {
      if (next == 16)
        return why(o, -EPROTO, "too many Sec-WebSocket-Extensions fields");
      ext[next++] = h->value;
    }
  }
  if (!upgrade || !connection)
    return why(o, -EPROTO, "the response lacks Upgrade: websocket or Connection: upgrade");
  if (!accepted)
    return why(o, -EPROTO, "the response lacks Sec-WebSocket-Accept");
  *deflate = false;
  if (next > 0) {
    if (!o->deflate.enable)
      return why(o, -EPROTO, "an extension not offered: %s", ext[0]);
    int rc = ws_pmd_client_accept(&o->deflate, ext, next, pmd);
    if (rc < 0)
      return why(o, -EPROTO, "an extension answer that breaks RFC 7692: %s", ext[0]);
    *deflate = rc == 1;
  }
  return 0;
}

int keel_ws_connect(const char *url, const keel_ws_opts_t *opts, keel_ws_t **out) {
  static const keel_ws_opts_t none;
  if (!url || !out)
    return -EINVAL;
  if (!opts)
    opts = &none;
  *out = NULL;
  if (opts->why && opts->why_len)
    opts->why[0] = 0;
  /* ws:// and wss:// are http:// and https:// for the URL's syntax. */
  char hurl[4096];
  if (strncasecmp(url, "ws://", 5) == 0)
    snprintf(hurl, sizeof hurl, "http://%s", url + 5);
  else if (strncasecmp(url, "wss://", 6) == 0)
    snprintf(hurl, sizeof hurl, "https://%s", url + 6);
  else
    return strstr(url, "://") ? -EPROTONOSUPPORT : -EINVAL;
  if (strlen(url) + 2 >= sizeof hurl)
    return -EINVAL;
  hc_url_t u;
  int rc = keel__hc_url_parse(hurl, &u);
  if (rc < 0)
    return rc;
  char target[300];
  connect_target(opts, &u, target, sizeof target);
  keel_tcp_t *tcp;
  if ((rc = keel_tcp_connect(target, &tcp)) < 0)
    return rc;
  keel_stream_t *s = keel_tcp_stream(tcp);
  keel_tls_t *tls = NULL;
  if (u.tls) {
    keel_tls_ctx_t *ctx = opts->tls;
    if (!ctx && (rc = keel__hc_default_tls(&ctx, opts->why, opts->why_len)) < 0) {
      keel_close(s);
      return rc;
    }
    char host[256], hostport[300];
    snprintf(host, sizeof host, "%.*s", (int)u.host_len, u.host);
    snprintf(hostport, sizeof hostport, "%s:%u", host, u.port);
    keel_tls_opts_t to = {.server_name = host, .session_key = hostport};
    if ((rc = keel_tls_open(ctx, s, &to, &tls)) < 0) {
      keel_close(s);
      return rc;
    }
    s = keel_tls_stream(tls);
    if ((rc = keel_tls_handshake(tls)) < 0) {
      why(opts, rc, "%s", keel_tls_reason(tls));
      keel_close(s);
      return rc;
    }
  }
  keel_bufstream_t *bs;
  if ((rc = keel_bufstream_open(s, NULL, &bs)) < 0) {
    keel_close(s);
    return rc;
  }
  s = keel_bufstream_stream(bs);
  char req[WS_REQUEST_MAX], key[25];
  size_t req_len;
  if ((rc = format_request(opts, &u, req, sizeof req, key, &req_len)) < 0 ||
      (rc = keel_write_all(s, req, req_len, NULL)) < 0)
    goto fail;
  size_t max = opts->max_handshake ? opts->max_handshake : WS_DEFAULT_MAX_HANDSHAKE;
  const void *start;
  ssize_t hl = keel_bufstream_read_until(bs, "\r\n\r\n", 4, max, &start);
  if (hl < 0) {
    rc = hl == -EPIPE ? why(opts, -EPROTO, "the server closed before answering") : (int)hl;
    goto fail;
  }
  /* The head is parsed in a copy: the field parser cuts it with NULs. */
  char *head = malloc((size_t)hl + 1);
  if (!head) {
    rc = -ENOMEM;
    goto fail;
  }
  memcpy(head, start, (size_t)hl);
  head[hl] = 0;
  ws_pmd_params_t pmd;
  bool deflate = false;
  const char *proto = NULL;
  rc = check_response(opts, head, (size_t)hl, key, &pmd, &deflate, &proto);
  if (rc == 0) {
    keel_bufstream_consume(bs, (size_t)hl);
    rc = keel__ws_new(bs, tcp, tls, false, opts, deflate ? &pmd : NULL, proto, out);
  }
  free(head);
  if (rc == 0)
    return 0;
fail:
  keel_close(s);
  return rc;
}
