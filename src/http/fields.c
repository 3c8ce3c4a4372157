/* Header fields, read the same strict way in requests (request.c) and
 * responses (client-head.c): tokens, values, "name: value CRLF" lines and
 * Content-Length values. */
#include <stdint.h>
#include <string.h>

#include "http-internal.h"

/* RFC 9110 §5.6.2 tchar. */
bool keel__http_token_char(unsigned char ch) {
  if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
    return true;
  return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static char lower(char ch) { return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch; }

/* Case-insensitive comparison of a field name with a lowercase literal. */
bool keel__http_name_eq(const char *a, size_t alen, const char *lit) {
  size_t n = strlen(lit);
  if (alen != n)
    return false;
  for (size_t i = 0; i < n; i++)
    if (lower(a[i]) != lit[i])
      return false;
  return true;
}

/* A field value byte (RFC 9110 §5.5): VCHAR, SP, HTAB or obs-text. */
bool keel__http_value_char(unsigned char ch) { return ch == '\t' || (ch >= 0x20 && ch != 0x7f); }

int keel__http_parse_field(char **pp, char *end, keel_http_header_t *h) {
  char *p = *pp, *name = p;
  while (p < end && keel__http_token_char((unsigned char)*p))
    p++;
  /* An empty name, whitespace before the colon (§5.1), anything else. */
  if (p == name || p >= end || *p != ':')
    return -1;
  h->name = name;
  h->name_len = (size_t)(p - name);
  *p++ = '\0';
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  char *v = p;
  while (p < end && keel__http_value_char((unsigned char)*p))
    p++;
  /* The value ends at CRLF and nowhere else: a bare CR (§2.2,
   * CVE-2023-30589), a bare LF, a NUL or another control is refused. */
  if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
    return -1;
  char *ve = p;
  while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
    ve--;
  *ve = '\0';
  h->value = v;
  h->value_len = (size_t)(ve - v);
  *pp = p + 2;
  return 0;
}

/* 1*DIGIT, at most 18 digits (no sign, no list, no junk). */
bool keel__http_parse_length(const char *v, size_t n, int64_t *out) {
  if (n == 0 || n > 18)
    return false;
  int64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9')
      return false;
    x = x * 10 + (v[i] - '0');
  }
  *out = x;
  return true;
}

/* ---- Formatting heads by hand (no printf per message) ---- */

char *keel__http_put(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}

char *keel__http_put_u64(char *p, uint64_t v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n)
    *p++ = tmp[--n];
  return p;
}

char *keel__http_put_hex(char *p, uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = digits[v & 15];
    v >>= 4;
  } while (v);
  while (n)
    *p++ = tmp[--n];
  return p;
}
