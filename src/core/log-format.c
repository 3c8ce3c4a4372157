/* Log lines as text (logfmt) or JSON, into a fixed buffer. */
#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log-internal.h"

/* Kept at the end of the buffer for what closes a cut line: a string's
 * closing quote, the truncated marker, '}', the newline and the NUL. */
#define LINE_RESERVE 32

typedef struct line_buf {
  char *p;
  size_t len;
  size_t cap; /* content stops here: [cap, size) is the reserve */
  bool json;
  bool truncated;
} line_buf_t;

/* Appends n bytes if they fit before the reserve; if not, nothing, and the
 * line is cut there (what follows is left out). */
static bool put(line_buf_t *b, const char *s, size_t n) {
  if (b->truncated || n > b->cap - b->len) {
    b->truncated = true;
    return false;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  return true;
}

static bool put_str(line_buf_t *b, const char *s) { return put(b, s, strlen(s)); }

/* Appends into the reserve: only the few bytes that close a line. */
static void put_closing(line_buf_t *b, const char *s) {
  size_t n = strlen(s);
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

/* Length of the valid UTF-8 sequence s starts with (1-4), or 0 if s[0]
 * starts none: RFC 3629, so no overlong forms, surrogates or code points
 * past U+10FFFF. s is NUL-terminated, which no continuation byte matches. */
static size_t utf8_len(const unsigned char *s) {
  unsigned c = s[0], lo = 0x80, hi = 0xbf;
  size_t n;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    lo = c == 0xe0 ? 0xa0 : lo;
    hi = c == 0xed ? 0x9f : hi;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    lo = c == 0xf0 ? 0x90 : lo;
    hi = c == 0xf4 ? 0x8f : hi;
  } else {
    return 0;
  }
  if (s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xbf)
      return 0;
  return n;
}

/* The escaped form of the character s starts with, into out (at most 6
 * bytes); *used gets the input bytes it stands for. A byte that is not
 * valid UTF-8 becomes U+FFFD in JSON (which must be Unicode) and \xHH in
 * text (which keeps the byte's value for the reader). */
static size_t escape_char(const unsigned char *s, bool json, char out[8], size_t *used) {
  static const char hex[] = "0123456789abcdef";
  size_t n = utf8_len(s);
  unsigned c = s[0];
  *used = n ? n : 1;
  if (n > 1) {
    memcpy(out, s, n);
    return n;
  }
  const char *two = c == '"'    ? "\\\""
                    : c == '\\' ? "\\\\"
                    : c == '\n' ? "\\n"
                    : c == '\r' ? "\\r"
                    : c == '\t' ? "\\t"
                                : NULL;
  if (n == 1 && two) {
    memcpy(out, two, 2);
    return 2;
  }
  if (n == 1 && c >= 0x20 && c != 0x7f) {
    out[0] = (char)c;
    return 1;
  }
  if (json && n == 0) {
    memcpy(out, "\\ufffd", 6);
    return 6;
  }
  const char *prefix = json ? "\\u00" : "\\x";
  size_t len = strlen(prefix);
  memcpy(out, prefix, len);
  out[len] = hex[c >> 4];
  out[len + 1] = hex[c & 15];
  return len + 2;
}

/* Text: whether a value needs quotes to read back as one value. */
static bool text_needs_quotes(const char *s) {
  if (*s == '\0')
    return true;
  for (const unsigned char *u = (const unsigned char *)s; *u; u++)
    if (*u <= ' ' || *u == '"' || *u == '=' || *u == '\\' || *u >= 0x7f)
      return true;
  return false;
}

/* Appends s escaped, quoted if quote; a string that does not fit is cut at
 * a character boundary and still closed. False if not even the opening
 * quote fit (nothing written). */
static bool put_string(line_buf_t *b, const char *s, bool quote) {
  if (quote && !put(b, "\"", 1))
    return false;
  for (const unsigned char *u = (const unsigned char *)s; *u;) {
    char out[8];
    size_t used, n = escape_char(u, b->json, out, &used);
    if (n + quote > b->cap - b->len) {
      b->truncated = true;
      break;
    }
    memcpy(b->p + b->len, out, n);
    b->len += n;
    u += used;
  }
  if (quote)
    put_closing(b, "\"");
  return true;
}

/* Appends the separator and key ("key": or key=); false if it does not
 * fit whole (then the caller takes back what was written). */
static bool put_key(line_buf_t *b, const char *key) {
  if (!key || !*key)
    key = "_";
  if (b->json)
    return put(b, ",", 1) && put_string(b, key, true) && !b->truncated && put(b, ":", 1);
  if (!put(b, " ", 1))
    return false;
  for (const unsigned char *u = (const unsigned char *)key; *u; u++) {
    /* A text key is programmer-chosen: bytes that would break the line
     * apart are replaced rather than escaped. */
    char c = *u > ' ' && *u < 0x7f && *u != '=' && *u != '"' && *u != '\\' ? (char)*u : '_';
    if (!put(b, &c, 1))
      return false;
  }
  return put(b, "=", 1);
}

/* The shortest of %.15g and %.17g that reads back as d; JSON has no NaN
 * or infinity, so null there. */
static size_t format_double(char *out, size_t size, double d, bool json) {
  if (!isfinite(d))
    return (size_t)snprintf(out, size, "%s",
                            json       ? "null"
                            : isnan(d) ? "nan"
                            : d > 0    ? "inf"
                                       : "-inf");
  int n = snprintf(out, size, "%.15g", d);
  if (strtod(out, NULL) != d)
    n = snprintf(out, size, "%.17g", d);
  for (char *p = out; *p; p++)
    if (*p == ',') /* a locale's decimal comma */
      *p = '.';
  return (size_t)n;
}

/* Appends one field, or (when it does not fit) nothing but the mark that
 * the line was cut. */
static void put_field(line_buf_t *b, const keel_log_field_t *f) {
  size_t start = b->len;
  char num[48];
  size_t n;
  if (!put_key(b, f->key)) {
    b->len = start;
    return;
  }
  switch (f->type) {
  case KEEL_LOG_FIELD_STR:
    if (f->v.str) {
      if (!put_string(b, f->v.str, b->json || text_needs_quotes(f->v.str)))
        b->len = start;
      return;
    }
    n = (size_t)snprintf(num, sizeof num, "%s", b->json ? "null" : "(null)");
    break;
  case KEEL_LOG_FIELD_INT:
    n = (size_t)snprintf(num, sizeof num, "%" PRId64, f->v.i);
    break;
  case KEEL_LOG_FIELD_UINT:
    n = (size_t)snprintf(num, sizeof num, "%" PRIu64, f->v.u);
    break;
  case KEEL_LOG_FIELD_DOUBLE:
    n = format_double(num, sizeof num, f->v.d, b->json);
    break;
  case KEEL_LOG_FIELD_BOOL:
    n = (size_t)snprintf(num, sizeof num, "%s", f->v.b ? "true" : "false");
    break;
  default: /* not a keel_log_field_type_t: say so rather than guess */
    n = (size_t)snprintf(num, sizeof num, "%s", b->json ? "null" : "(bad-type)");
    break;
  }
  if (!put(b, num, n))
    b->len = start;
}

static int64_t floor_div(int64_t a, int64_t b) {
  return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* RFC 3339 in UTC with milliseconds (2026-12-06T19:01:02.345Z). The date
 * comes from Howard Hinnant's days-to-civil algorithm rather than
 * gmtime_r, which takes glibc's time-zone lock on every call. */
static size_t format_time(char *out, size_t size, int64_t ns) {
  int64_t ms = floor_div(ns, 1000000), secs = floor_div(ms, 1000);
  int64_t days = floor_div(secs, 86400), in_day = secs - days * 86400;
  int64_t z = days + 719468, era = floor_div(z, 146097);
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
  int64_t day = doy - (153 * mp + 2) / 5 + 1, month = mp < 10 ? mp + 3 : mp - 9;
  int64_t year = yoe + era * 400 + (month <= 2);
  int n =
      snprintf(out, size,
               "%04" PRId64 "-%02" PRId64 "-%02" PRId64 "T%02" PRId64 ":%02" PRId64 ":%02" PRId64
               ".%03" PRId64 "Z",
               year, month, day, in_day / 3600, in_day / 60 % 60, in_day % 60, ms - secs * 1000);
  return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

/* ts, level, worker, task and msg: always there, and (but for a long
 * message, which is cut) they fit. */
static void put_header(line_buf_t *b, const keel_log_record_t *rec) {
  char ts[48];
  size_t ts_len = format_time(ts, sizeof ts, rec->time_ns);
  const char *level = keel_log_level_name(rec->level);
  if (b->json) {
    put_str(b, "{\"ts\":\"");
    put(b, ts, ts_len);
    put_str(b, "\",\"level\":\"");
    put_str(b, level);
    put_str(b, "\"");
  } else {
    put(b, ts, ts_len);
    put_str(b, " ");
    put_str(b, level);
  }
  keel_log_field_t f = keel_log_int("worker", rec->worker);
  if (rec->worker >= 0)
    put_field(b, &f);
  f = keel_log_str("task", rec->task);
  if (rec->task)
    put_field(b, &f);
  if (put_key(b, "msg"))
    put_string(b, rec->msg, true);
}

size_t keel__log_format(char *buf, size_t size, keel_log_format_t format,
                        const keel_log_record_t *rec, bool truncated) {
  assert(size >= 128);
  line_buf_t b = {buf, 0, size - LINE_RESERVE, format == KEEL_LOG_JSON, false};
  put_header(&b, rec);
  for (size_t i = 0; i < rec->nfields && !b.truncated; i++)
    put_field(&b, &rec->fields[i]);
  if (b.truncated || truncated)
    put_closing(&b, b.json ? ",\"truncated\":true" : " truncated=true");
  if (b.json)
    put_closing(&b, "}");
  put_closing(&b, "\n");
  buf[b.len] = '\0';
  return b.len;
}
