/* The server's opening handshake: an HTTP request upgraded (RFC 6455
 * §4.2), the connection then taken from the HTTP server. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "handshake.h"
#include "http-internal.h"

#define WS_RESPONSE_MAX 4096
#define WS_MAX_EXT_FIELDS 16

bool keel_ws_is_upgrade(const keel_http_request_t *req) {
  size_t n = keel_http_header_count(req);
  for (size_t i = 0; i < n; i++) {
    const keel_http_header_t *h = keel_http_header_at(req, i);
    if (strcasecmp(h->name, "upgrade") == 0 && keel__ws_list_has(h->value, "websocket"))
      return true;
  }
  return false;
}

/* Whether any field named name holds token in its list. */
static bool any_has(const keel_http_request_t *req, const char *name, const char *token) {
  size_t n = keel_http_header_count(req);
  for (size_t i = 0; i < n; i++) {
    const keel_http_header_t *h = keel_http_header_at(req, i);
    if (strcasecmp(h->name, name) == 0 && keel__ws_list_has(h->value, token))
      return true;
  }
  return false;
}

/* The single field named name; NULL if there is none, *dup if more. */
static const keel_http_header_t *only(const keel_http_request_t *req, const char *name, bool *dup) {
  const keel_http_header_t *found = NULL;
  size_t n = keel_http_header_count(req);
  for (size_t i = 0; i < n; i++) {
    const keel_http_header_t *h = keel_http_header_at(req, i);
    if (strcasecmp(h->name, name) == 0) {
      if (found)
        *dup = true;
      found = h;
    }
  }
  return found;
}

static int refuse(keel_http_response_t *res, int status, int err, const char *why) {
  keel_http_set_status(res, status);
  if (status == 426) {
    keel_http_add_header(res, "Sec-WebSocket-Version", "13");
    keel_http_add_header(res, "Upgrade", "websocket");
  }
  keel_http_close_after(res);
  char body[160];
  int n = snprintf(body, sizeof body, "%s\n", why);
  keel_http_send(res, body, (size_t)n);
  return err;
}

/* The first of the server's subprotocols the client offers. */
static const char *choose_subprotocol(const keel_http_request_t *req, const char *const *mine) {
  if (!mine)
    return NULL;
  for (; *mine; mine++) {
    size_t n = keel_http_header_count(req);
    for (size_t i = 0; i < n; i++) {
      const keel_http_header_t *h = keel_http_header_at(req, i);
      if (strcasecmp(h->name, "sec-websocket-protocol") == 0) {
        const char *p = h->value, *end = h->value + h->value_len, *tok;
        size_t tl;
        while (keel__ws_next_token(&p, end, &tok, &tl) == 1)
          if (tl == strlen(*mine) && memcmp(tok, *mine, tl) == 0)
            return *mine;
      }
    }
  }
  return NULL;
}

static char *put(char *p, char *end, const char *s, size_t n) {
  if (!p || (size_t)(end - p) < n)
    return NULL;
  memcpy(p, s, n);
  return p + n;
}

static char *puts_(char *p, char *end, const char *s) { return put(p, end, s, strlen(s)); }

int keel_ws_accept(keel_http_request_t *req, keel_http_response_t *res, const keel_ws_opts_t *opts,
                   keel_ws_t **out) {
  static const keel_ws_opts_t none;
  if (!req || !res)
    return -EINVAL;
  if (!opts)
    opts = &none;
  if (out)
    *out = NULL;
  if (!opts->on_message && !out)
    return -EINVAL;
  if (keel_http_responded(res))
    return -EALREADY;
  /* RFC 6455 §4.2.1 */
  if (strcmp(keel_http_method(req), "GET") != 0)
    return refuse(res, 400, -EPROTO, "a WebSocket upgrade must be a GET");
  if (keel_http_version(req) < 11)
    return refuse(res, 400, -EPROTO, "a WebSocket upgrade needs HTTP/1.1");
  if (!any_has(req, "upgrade", "websocket"))
    return refuse(res, 426, -EPROTO, "this resource speaks WebSocket only");
  if (!any_has(req, "connection", "upgrade"))
    return refuse(res, 400, -EPROTO, "Connection: upgrade is missing");
  bool dup = false;
  const keel_http_header_t *version = only(req, "sec-websocket-version", &dup);
  if (!version || dup || strcmp(version->value, "13") != 0)
    return refuse(res, 426, -EPROTONOSUPPORT, "Sec-WebSocket-Version 13 only");
  const keel_http_header_t *key = only(req, "sec-websocket-key", &dup);
  if (!key || dup || !keel__ws_key_valid(key->value, key->value_len))
    return refuse(res, 400, -EPROTO, "a bad Sec-WebSocket-Key");
  if (keel_http_content_length(req) != 0)
    return refuse(res, 400, -EPROTO, "a WebSocket upgrade has no body");
  if (opts->check_origin) {
    dup = false;
    const keel_http_header_t *origin = only(req, "origin", &dup);
    if (dup || !opts->check_origin(origin ? origin->value : NULL, opts->check_origin_ctx))
      return refuse(res, 403, -EACCES, "origin refused");
  }
  const char *proto = choose_subprotocol(req, opts->subprotocols);

  /* permessage-deflate */
  ws_pmd_params_t pmd;
  bool deflate = false;
  char ext[256];
  if (opts->deflate.enable) {
    const char *values[WS_MAX_EXT_FIELDS];
    size_t nv = 0, n = keel_http_header_count(req);
    for (size_t i = 0; i < n && nv < WS_MAX_EXT_FIELDS; i++) {
      const keel_http_header_t *h = keel_http_header_at(req, i);
      if (strcasecmp(h->name, "sec-websocket-extensions") == 0)
        values[nv++] = h->value;
    }
    int rc = nv ? ws_pmd_server_negotiate(&opts->deflate, values, nv, &pmd, ext, sizeof ext) : 0;
    if (rc < 0)
      return refuse(res, 400, -EPROTO, "a bad Sec-WebSocket-Extensions");
    deflate = rc == 1;
  }

  char accept[WS_ACCEPT_LEN + 1];
  int rc = keel__ws_accept_key(key->value, key->value_len, accept);
  if (rc < 0)
    return rc;
  char head[WS_RESPONSE_MAX], *p = head, *end = head + sizeof head;
  p = puts_(p, end,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: ");
  p = put(p, end, accept, WS_ACCEPT_LEN);
  p = puts_(p, end, "\r\n");
  if (proto) {
    p = puts_(p, end, "Sec-WebSocket-Protocol: ");
    p = puts_(p, end, proto);
    p = puts_(p, end, "\r\n");
  }
  if (deflate) {
    p = puts_(p, end, "Sec-WebSocket-Extensions: ");
    p = puts_(p, end, ext);
    p = puts_(p, end, "\r\n");
  }
  for (size_t i = 0; i < opts->nheaders; i++) {
    const keel_http_header_t *h = &opts->headers[i];
    size_t nl = h->name_len ? h->name_len : strlen(h->name);
    size_t vl = h->value_len ? h->value_len : strlen(h->value);
    for (size_t j = 0; j < nl; j++)
      if (!keel__http_token_char((unsigned char)h->name[j]))
        return -EINVAL;
    for (size_t j = 0; j < vl; j++)
      if (!keel__http_value_char((unsigned char)h->value[j]))
        return -EINVAL;
    p = put(p, end, h->name, nl);
    p = puts_(p, end, ": ");
    p = put(p, end, h->value, vl);
    p = puts_(p, end, "\r\n");
  }
  p = puts_(p, end, "\r\n");
  if (!p)
    return -EMSGSIZE;

  http_upgrade_t up;
  if ((rc = keel__http_upgrade(req, head, (size_t)(p - head), &up)) < 0)
    return rc;
  keel_ws_t *ws;
  rc = keel__ws_new(up.bs, up.tcp, up.tls, true, opts, deflate ? &pmd : NULL, proto, &ws);
  if (rc < 0) {
    keel_close(keel_bufstream_stream(up.bs));
    if (up.live)
      (*up.live)--;
    return rc;
  }
  keel__ws_set_live(ws, up.live);
  if (up.draining)
    keel__ws_drain(ws);
  if (opts->on_message) {
    keel__http_upgrade_set(req, keel__ws_run, NULL, ws);
    return 0;
  }
  keel__http_upgrade_set(req, keel__ws_orphan, keel__ws_drain, ws);
  keel__ws_set_request(ws, req);
  *out = ws;
  return 0;
}
