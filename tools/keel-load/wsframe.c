/* keel-load's WebSocket wire format (tools/keel-load/wsframe.h). */
#include "wsframe.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

/* RFC 6455 §1.3 (the value every client and server must agree on). */
#define WSF_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

size_t wsf_put_header(uint8_t *out, bool fin, uint8_t opcode, uint64_t payload_len,
                      const uint8_t *mask) {
  size_t n = 2;
  out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
  uint8_t mask_bit = mask != NULL ? 0x80 : 0;
  if (payload_len < 126) {
    out[1] = (uint8_t)(mask_bit | payload_len);
  } else if (payload_len <= 0xffff) {
    out[1] = mask_bit | 126;
    out[2] = (uint8_t)(payload_len >> 8);
    out[3] = (uint8_t)payload_len;
    n = 4;
  } else {
    out[1] = mask_bit | 127;
    for (int i = 0; i < 8; i++)
      out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    n = 10;
  }
  if (mask != NULL) {
    memcpy(out + n, mask, 4);
    n += 4;
  }
  return n;
}

int wsf_parse_header(const uint8_t *buf, size_t len, wsf_header_t *out) {
  if (len < 2)
    return 0;
  size_t need = 2;
  uint8_t len7 = buf[1] & 0x7f;
  need += len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
  bool masked = (buf[1] & 0x80) != 0;
  need += masked ? 4 : 0;
  if (len < need)
    return 0;
  uint64_t plen = len7;
  if (len7 == 126) {
    plen = (uint64_t)buf[2] << 8 | buf[3];
    if (plen < 126)
      return -EPROTO; /* fits the 7-bit form */
  } else if (len7 == 127) {
    plen = 0;
    for (int i = 0; i < 8; i++)
      plen = plen << 8 | buf[2 + i];
    if (plen >> 63 != 0 || plen <= 0xffff)
      return -EPROTO; /* top bit set, or fits the 16-bit form */
  }
  out->fin = (buf[0] & 0x80) != 0;
  out->rsv = (uint8_t)((buf[0] >> 4) & 0x07);
  out->opcode = buf[0] & 0x0f;
  out->masked = masked;
  out->payload_len = plen;
  if (masked)
    memcpy(out->mask, buf + need - 4, 4);
  else
    memset(out->mask, 0, 4);
  return (int)need;
}

void wsf_mask(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t mask[4], uint64_t phase) {
  /* The key rotated to phase, twice: a word of it masks eight bytes, and
   * eight is a multiple of four, so every word lines up with the key. */
  uint8_t key8[8];
  for (int i = 0; i < 8; i++)
    key8[i] = mask[(phase + (uint64_t)i) & 3];
  uint64_t key;
  memcpy(&key, key8, sizeof key); /* byte order does not matter: bytes in, bytes out */
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t word;
    memcpy(&word, src + i, sizeof word);
    word ^= key;
    memcpy(dst + i, &word, sizeof word);
  }
  for (; i < len; i++)
    dst[i] = src[i] ^ key8[i & 7];
}

void wsf_make_key(const uint8_t nonce[WSF_NONCE_LEN], char key[WSF_KEY_LEN + 1]) {
  EVP_EncodeBlock((unsigned char *)key, nonce, WSF_NONCE_LEN);
}

int wsf_accept_for(const char *key, char accept[WSF_ACCEPT_LEN + 1]) {
  char joined[128];
  int n = snprintf(joined, sizeof joined, "%s" WSF_GUID, key);
  if (n < 0 || (size_t)n >= sizeof joined)
    return -EIO;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  if (EVP_Digest(joined, (size_t)n, digest, &dlen, EVP_sha1(), NULL) != 1 || dlen != 20)
    return -EIO;
  EVP_EncodeBlock((unsigned char *)accept, digest, (int)dlen);
  return 0;
}

int wsf_request(char *out, size_t cap, const char *host_port, const char *path, const char *key) {
  int n = snprintf(out, cap,
                   "GET %s HTTP/1.1\r\n"
                   "Host: %s\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "\r\n",
                   path, host_port, key);
  return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

size_t wsf_head_len(const char *buf, size_t len) {
  for (size_t i = 3; i < len; i++)
    if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
      return i + 1;
  return 0;
}

/* ---- The response check -------------------------------------------------------- */

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

/* Whether the comma-separated list value[0 .. len) has token, any case. */
static bool list_has(const char *value, size_t len, const char *token) {
  size_t tlen = strlen(token), i = 0;
  while (i < len) {
    size_t end = i;
    while (end < len && value[end] != ',')
      end++;
    size_t a = i, b = end;
    while (a < b && is_ows(value[a]))
      a++;
    while (b > a && is_ows(value[b - 1]))
      b--;
    if (b - a == tlen && strncasecmp(value + a, token, tlen) == 0)
      return true;
    i = end + 1;
  }
  return false;
}

static bool field_is(const char *name, size_t len, const char *want) {
  return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

typedef struct wsf_seen {
  bool upgrade, connection, accept;
} wsf_seen_t;

/* One header field line (without its CRLF). NULL, or why it fails. */
static const char *check_field(const char *line, size_t len, const char *accept, wsf_seen_t *seen) {
  if (len == 0 || is_ows(line[0]))
    return "a malformed header field (folded or empty name)";
  const char *colon = memchr(line, ':', len);
  if (colon == NULL)
    return "a header field without a colon";
  size_t nlen = (size_t)(colon - line);
  const char *v = colon + 1, *end = line + len;
  while (v < end && is_ows(*v))
    v++;
  while (end > v && is_ows(end[-1]))
    end--;
  size_t vlen = (size_t)(end - v);
  if (field_is(line, nlen, "upgrade")) {
    if (!(vlen == 9 && strncasecmp(v, "websocket", 9) == 0))
      return "Upgrade is not websocket";
    seen->upgrade = true;
  } else if (field_is(line, nlen, "connection")) {
    if (!list_has(v, vlen, "upgrade"))
      return "Connection does not name upgrade";
    seen->connection = true;
  } else if (field_is(line, nlen, "sec-websocket-accept")) {
    if (vlen != WSF_ACCEPT_LEN || memcmp(v, accept, WSF_ACCEPT_LEN) != 0)
      return "wrong Sec-WebSocket-Accept";
    seen->accept = true;
  } else if (field_is(line, nlen, "sec-websocket-extensions")) {
    return "an extension that was not offered";
  } else if (field_is(line, nlen, "sec-websocket-protocol")) {
    return "a subprotocol that was not offered";
  }
  return NULL;
}

const char *wsf_check_response(const char *head, size_t head_len, const char *accept) {
  static const char status[] = "HTTP/1.1 101";
  const char *end = head + head_len;
  const char *eol = NULL;
  for (const char *p = head; p + 1 < end; p++)
    if (p[0] == '\r' && p[1] == '\n') {
      eol = p;
      break;
    }
  if (eol == NULL)
    return "no status line";
  size_t slen = (size_t)(eol - head);
  if (slen < sizeof status - 1 || memcmp(head, status, sizeof status - 1) != 0 ||
      (slen > sizeof status - 1 && head[sizeof status - 1] != ' '))
    return "the status is not HTTP/1.1 101";
  wsf_seen_t seen = {0};
  const char *line = eol + 2;
  while (line + 2 <= end && !(line[0] == '\r' && line[1] == '\n')) {
    const char *next = line;
    while (next + 1 < end && !(next[0] == '\r' && next[1] == '\n'))
      next++;
    if (next + 1 >= end)
      return "a header field without its line end";
    const char *why = check_field(line, (size_t)(next - line), accept, &seen);
    if (why != NULL)
      return why;
    line = next + 2;
  }
  if (!seen.upgrade)
    return "no Upgrade field";
  if (!seen.connection)
    return "no Connection field";
  if (!seen.accept)
    return "no Sec-WebSocket-Accept field";
  return NULL;
}
