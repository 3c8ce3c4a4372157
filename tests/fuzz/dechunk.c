/* A reference reading of chunked bodies (dechunk.h), for the HTTP fuzz
 * targets: RFC 9112 §7.1 read plainly, to hold keel's decoding against. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dechunk.h"

static void dec_append(char **dec, size_t *dec_len, const char *p, size_t n) {
  if (!dec || n == 0)
    return;
  char *grown = realloc(*dec, *dec_len + n + 1);
  if (!grown)
    abort();
  memcpy(grown + *dec_len, p, n);
  *dec = grown;
  *dec_len += n;
}

static int hexval(unsigned char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch |= 0x20;
  return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* A line's end at p: 0 with *next after its CRLF, 1 when the bytes end
 * first, -1 at a bare CR or LF, or a control byte other than HTAB. */
static int line_end(const char *p, size_t n, size_t at, size_t *next) {
  for (size_t i = at; i < n; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch == '\r') {
      if (i + 1 == n)
        return 1;
      if (p[i + 1] != '\n')
        return -1;
      *next = i + 2;
      return 0;
    }
    if (ch == '\n' || (ch < 0x20 && ch != '\t') || ch == 0x7f)
      return -1;
  }
  return 1;
}

/* chunk-size [ ";" chunk-ext ] CRLF (RFC 9112 §7.1): the size in *size. */
static int chunk_size_line(const char *p, size_t n, size_t at, uint64_t *size, size_t *next) {
  size_t i = at;
  uint64_t v = 0;
  while (i < n && hexval((unsigned char)p[i]) >= 0) {
    if (v > (UINT64_MAX >> 4))
      return -1;
    v = v << 4 | (uint64_t)hexval((unsigned char)p[i]);
    i++;
  }
  if (i == n)
    return 1;
  if (i == at)
    return -1;
  *size = v;
  if (p[i] == ';')
    return line_end(p, n, i + 1, next);
  if (p[i] != '\r')
    return -1;
  if (i + 1 == n)
    return 1;
  if (p[i + 1] != '\n')
    return -1;
  *next = i + 2;
  return 0;
}

/* Trailer lines after the last chunk, up to the empty line (or a bare
 * LF in its place, with FZ_DECHUNK_TRAILER_LF). */
static int trailer_section(const char *p, size_t n, size_t at, unsigned flags, size_t *end) {
  for (;;) {
    if (at + 2 <= n && p[at] == '\r' && p[at + 1] == '\n') {
      *end = at + 2;
      return 0;
    }
    if (at < n && p[at] == '\n' && (flags & FZ_DECHUNK_TRAILER_LF)) {
      *end = at + 1;
      return 0;
    }
    size_t next;
    int rc = line_end(p, n, at, &next);
    if (rc != 0)
      return rc;
    at = next;
  }
}

int fz_dechunk(const char *p, size_t n, unsigned flags, size_t *end, char **dec, size_t *dec_len) {
  size_t at = 0;
  for (;;) {
    uint64_t size;
    size_t next;
    int rc = chunk_size_line(p, n, at, &size, &next);
    if (rc != 0)
      return rc;
    at = next;
    if (size == 0)
      return trailer_section(p, n, at, flags, end);
    size_t have = n - at < size ? n - at : (size_t)size;
    dec_append(dec, dec_len, p + at, have);
    if (have < size || n - at - have < 2)
      return 1;
    at += have;
    if (p[at] != '\r' || p[at + 1] != '\n')
      return -1;
    at += 2;
  }
}
