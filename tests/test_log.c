/* Logging: the text and JSON formats read back by strict parsers (every
 * field, its type, the time), hostile strings (quotes, newlines, control
 * bytes, invalid UTF-8) in messages, keys and values, lines cut at the
 * length limit, the rate limit (burst, the count reported by the next line
 * after the window, by keel_log_flush, off), the sink (its record and
 * line, a sink that logs or sets a sink, back to stderr), the worker and
 * task of a line logged from a task, and threads logging at once (lines
 * whole; identical lines limited exactly; sinks swapped meanwhile). The log
 * settings are process-wide: each case logs in a forked child, whose
 * stderr the parent reads. */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "keel-test.h"

/* ---- Reading lines back ------------------------------------------------- */

#define MAX_FIELDS 256

typedef struct kv {
  const char *key, *val; /* decoded, NUL-terminated */
  char kind; /* 's' string, 'n' number, 'b' true/false, 'z' null; text: 'q' quoted, 'r' bare */
} kv_t;

typedef struct parsed {
  kv_t kv[MAX_FIELDS];
  int n;
  char store[8192];
  size_t used;
} parsed_t;

static const kv_t *get(const parsed_t *p, const char *key) {
  for (int i = 0; i < p->n; i++)
    if (strcmp(p->kv[i].key, key) == 0)
      return &p->kv[i];
  return NULL;
}

static const char *val(const parsed_t *p, const char *key) {
  const kv_t *kv = get(p, key);
  return kv ? kv->val : NULL;
}

static char *store_byte(parsed_t *p, char c) {
  if (p->used >= sizeof p->store)
    return NULL;
  p->store[p->used] = c;
  return &p->store[p->used++];
}

/* Length of the UTF-8 sequence s starts with (n bytes available), or 0 if
 * it is not valid: decodes the code point and rejects overlong forms,
 * surrogates and anything past U+10FFFF (written apart from the library's
 * check, which it verifies). */
static size_t utf8_valid(const unsigned char *s, size_t n) {
  if (n == 0)
    return 0;
  size_t len = s[0] < 0x80             ? 1
               : (s[0] & 0xe0) == 0xc0 ? 2
               : (s[0] & 0xf0) == 0xe0 ? 3
               : (s[0] & 0xf8) == 0xf0 ? 4
                                       : 0;
  if (len == 0 || len > n)
    return 0;
  uint32_t cp = len == 1 ? s[0] : s[0] & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

static bool put_utf8(parsed_t *p, uint32_t cp) {
  char b[4];
  size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  if (n == 1)
    b[0] = (char)cp;
  else {
    for (size_t i = n - 1; i > 0; i--, cp >>= 6)
      b[i] = (char)(0x80 | (cp & 0x3f));
    b[0] = (char)((0xf00 >> n) | cp);
  }
  for (size_t i = 0; i < n; i++)
    if (!store_byte(p, b[i]))
      return false;
  return true;
}

static int hex_val(char c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

static bool json_u4(const char **s, const char *end, uint32_t *cp) {
  if (end - *s < 6 || (*s)[0] != '\\' || (*s)[1] != 'u')
    return false;
  *cp = 0;
  for (int i = 2; i < 6; i++) {
    int h = hex_val((*s)[i]);
    if (h < 0)
      return false;
    *cp = *cp << 4 | (uint32_t)h;
  }
  *s += 6;
  return true;
}

/* A JSON string at *s (RFC 8259, strictly: no raw control bytes, valid
 * UTF-8, paired surrogates), decoded into p's store. */
static const char *json_string(const char **s, const char *end, parsed_t *p) {
  if (*s >= end || **s != '"')
    return NULL;
  (*s)++;
  const char *start = &p->store[p->used];
  while (*s < end && **s != '"') {
    unsigned char c = (unsigned char)**s;
    if (c < 0x20)
      return NULL;
    if (c != '\\') {
      size_t n = utf8_valid((const unsigned char *)*s, (size_t)(end - *s));
      for (size_t i = 0; i < n; i++)
        if (!store_byte(p, (*s)[i]))
          return NULL;
      if (n == 0)
        return NULL;
      *s += n;
      continue;
    }
    if (end - *s < 2)
      return NULL;
    const char *simple = strchr("\"\\/bfnrt", (*s)[1]);
    if (simple && (*s)[1]) {
      static const char decoded[] = "\"\\/\b\f\n\r\t";
      if (!store_byte(p, decoded[simple - "\"\\/bfnrt"]))
        return NULL;
      *s += 2;
      continue;
    }
    uint32_t cp, lo;
    if (!json_u4(s, end, &cp) || (cp >= 0xdc00 && cp <= 0xdfff))
      return NULL;
    if (cp >= 0xd800 && cp <= 0xdbff) {
      if (!json_u4(s, end, &lo) || lo < 0xdc00 || lo > 0xdfff)
        return NULL;
      cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    if (!put_utf8(p, cp))
      return NULL;
  }
  if (*s >= end || !store_byte(p, '\0'))
    return NULL;
  (*s)++;
  return start;
}

/* A JSON number, strictly by the grammar. */
static bool json_number(const char **s, const char *end) {
  const char *q = *s;
  if (q < end && *q == '-')
    q++;
  if (q < end && *q == '0')
    q++;
  else if (q < end && *q >= '1' && *q <= '9')
    while (q < end && *q >= '0' && *q <= '9')
      q++;
  else
    return false;
  if (q < end && *q == '.') {
    if (++q >= end || *q < '0' || *q > '9')
      return false;
    while (q < end && *q >= '0' && *q <= '9')
      q++;
  }
  if (q < end && (*q == 'e' || *q == 'E')) {
    q++;
    if (q < end && (*q == '+' || *q == '-'))
      q++;
    if (q >= end || *q < '0' || *q > '9')
      return false;
    while (q < end && *q >= '0' && *q <= '9')
      q++;
  }
  *s = q;
  return true;
}

static bool json_value(const char **s, const char *end, parsed_t *p, kv_t *kv) {
  static const struct {
    const char *word;
    char kind;
  } words[] = {{"true", 'b'}, {"false", 'b'}, {"null", 'z'}};
  if (*s < end && **s == '"') {
    kv->kind = 's';
    return (kv->val = json_string(s, end, p)) != NULL;
  }
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(words[i].word);
    if ((size_t)(end - *s) >= n && memcmp(*s, words[i].word, n) == 0) {
      kv->kind = words[i].kind;
      kv->val = words[i].word;
      *s += n;
      return true;
    }
  }
  const char *start = *s;
  if (!json_number(s, end))
    return false;
  kv->kind = 'n';
  kv->val = &p->store[p->used];
  for (const char *q = start; q < *s; q++)
    if (!store_byte(p, *q))
      return false;
  return store_byte(p, '\0') != NULL;
}

/* One JSON line: a flat object, then the newline, then nothing. */
static bool parse_json_line(const char *s, size_t len, parsed_t *p) {
  const char *end = s + len;
  memset(p, 0, sizeof *p);
  if (len < 3 || end[-1] != '\n' || *s++ != '{')
    return false;
  end--;
  while (s < end && *s != '}') {
    if (p->n > 0 && *s++ != ',')
      return false;
    if (p->n == MAX_FIELDS)
      return false;
    kv_t *kv = &p->kv[p->n++];
    if (!(kv->key = json_string(&s, end, p)) || s >= end || *s++ != ':' ||
        !json_value(&s, end, p, kv))
      return false;
  }
  return s + 1 == end && *s == '}';
}

/* A text value at *s: quoted (\" \\ \n \r \t \xHH; raw bytes printable
 * or valid UTF-8) or bare (printable ASCII but " = \). */
static const char *text_value(const char **s, const char *end, parsed_t *p, char *kind) {
  const char *start = &p->store[p->used];
  if (**s != '"') {
    *kind = 'r';
    for (; *s < end && **s != ' '; (*s)++) {
      unsigned char c = (unsigned char)**s;
      if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\' || !store_byte(p, (char)c))
        return NULL;
    }
    return store_byte(p, '\0') && start != &p->store[p->used - 1] ? start : NULL;
  }
  *kind = 'q';
  for ((*s)++; *s < end && **s != '"';) {
    unsigned char c = (unsigned char)**s;
    int h1, h2;
    char out = 0;
    if (c == '\\' && end - *s >= 2 && strchr("\"\\nrt", (*s)[1]) && (*s)[1]) {
      out = (*s)[1] == 'n' ? '\n' : (*s)[1] == 'r' ? '\r' : (*s)[1] == 't' ? '\t' : (*s)[1];
      *s += 2;
    } else if (c == '\\' && end - *s >= 4 && (*s)[1] == 'x' && (h1 = hex_val((*s)[2])) >= 0 &&
               (h2 = hex_val((*s)[3])) >= 0) {
      out = (char)(h1 << 4 | h2);
      *s += 4;
    } else if (c < 0x20 || c == 0x7f || c == '\\') {
      return NULL;
    } else {
      size_t n = utf8_valid((const unsigned char *)*s, (size_t)(end - *s));
      if (n == 0)
        return NULL;
      for (size_t i = 0; i + 1 < n; i++)
        if (!store_byte(p, (*s)[i]))
          return NULL;
      out = (*s)[n - 1];
      *s += n;
    }
    if (!store_byte(p, out))
      return NULL;
  }
  if (*s >= end || !store_byte(p, '\0'))
    return NULL;
  (*s)++;
  return start;
}

/* One text line: ts, level, then " key=value" pairs, then the newline.
 * ts and level are stored as fields of those names. */
static bool parse_text_line(const char *s, size_t len, parsed_t *p) {
  const char *end = s + len;
  memset(p, 0, sizeof *p);
  if (len < 30 || end[-1] != '\n' || s[24] != ' ')
    return false;
  end--;
  p->kv[0] = (kv_t){"ts", &p->store[0], 'r'};
  memcpy(p->store, s, 24);
  p->used = 25;
  s += 25;
  p->kv[1] = (kv_t){"level", &p->store[p->used], 'r'};
  while (s < end && *s >= 'a' && *s <= 'z')
    store_byte(p, *s++);
  store_byte(p, '\0');
  for (p->n = 2; s < end; p->n++) {
    if (*s++ != ' ' || p->n == MAX_FIELDS)
      return false;
    kv_t *kv = &p->kv[p->n];
    kv->key = &p->store[p->used];
    for (; s < end && *s != '='; s++)
      if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f || *s == '"' || *s == '\\' ||
          !store_byte(p, *s))
        return false;
    if (s >= end || !store_byte(p, '\0') || kv->key[0] == '\0')
      return false;
    s++;
    if (s >= end || !(kv->val = text_value(&s, end, p, &kv->kind)))
      return false;
  }
  return true;
}

/* The lines of a child's stderr. */
typedef struct lines {
  char *text;
  const char *line[8192];
  size_t len[8192];
  int n;
} lines_t;

static lines_t *split_lines(char *text) {
  lines_t *l = calloc(1, sizeof *l);
  assert_non_null(l);
  l->text = text;
  for (char *s = text; *s;) {
    char *nl = strchr(s, '\n');
    assert_non_null(nl); /* every line ends in a newline */
    assert_true(l->n < 8192);
    l->line[l->n] = s;
    l->len[l->n++] = (size_t)(nl + 1 - s);
    s = nl + 1;
  }
  return l;
}

static void free_lines(lines_t *l) {
  free(l->text);
  free(l);
}

/* ts is RFC 3339 UTC with ms, and within a few minutes of the wall clock
 * (a loose bound: it proves the clock and the time zone, not speed). */
static void check_ts(const char *ts) {
  struct tm tm = {0};
  int ms = -1;
  char z = 0;
  assert_int_equal(strlen(ts), 24);
  assert_int_equal(sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                          &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &z),
                   8);
  assert_int_equal(z, 'Z');
  assert_true(ms >= 0 && ms <= 999);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  time_t t = timegm(&tm);
  time_t now = time(NULL);
  if (t < now - 300 || t > now + 300)
    fail_msg("timestamp %s is %lld s from now", ts, (long long)(t - now));
}

/* Parses line i of l (json or text) into p, failing with the line. */
static void parse_line(const lines_t *l, int i, bool json, parsed_t *p) {
  if (i >= l->n)
    fail_msg("line %d missing (%d lines)", i, l->n);
  bool ok =
      json ? parse_json_line(l->line[i], l->len[i], p) : parse_text_line(l->line[i], l->len[i], p);
  if (!ok)
    fail_msg("line %d is not valid %s: %.*s", i, json ? "JSON" : "text", (int)l->len[i],
             l->line[i]);
  check_ts(val(p, "ts"));
}

/* Runs fn in a child; returns its stderr, split, after checking its exit
 * and that no sanitizer spoke (the child's _exit keeps a report from
 * changing its status). */
static lines_t *run_child(int (*fn)(void)) {
  int status;
  char *err = kt_run_child(fn, 120, &status, NULL);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("child failed (status 0x%x)", status);
  if (strstr(err, "Sanitizer") || strstr(err, "runtime error:"))
    fail_msg("a sanitizer report in the child's stderr");
  return split_lines(err);
}

/* ---- Formats -------------------------------------------------------------- */

static void log_sample(void) {
  keel_log(KEEL_LOG_INFO, "hello %d", 42);
  keel_log(KEEL_LOG_DEBUG, "below the level");
  KEEL_LOG_FIELDS(
      KEEL_LOG_WARN, "accepted", keel_log_str("peer", "127.0.0.1:5555"), keel_log_int("fd", -3),
      keel_log_uint("max", UINT64_MAX), keel_log_double("ratio", 0.25), keel_log_bool("ok", true),
      keel_log_str("none", NULL), keel_log_errno("err", -ECONNRESET), keel_log_str("empty", ""));
}

static int child_formats(void) {
  log_sample();
  if (keel_log_set_format((keel_log_format_t)7) != -EINVAL)
    return 10;
  if (keel_log_set_format(KEEL_LOG_JSON) != 0)
    return 11;
  log_sample();
  keel_log_set_level(KEEL_LOG_DEBUG);
  keel_log(KEEL_LOG_DEBUG, "at debug");
  keel_log_set_level(KEEL_LOG_ERROR);
  keel_log(KEEL_LOG_WARN, "below error");
  if (keel_log_enabled(KEEL_LOG_WARN) || !keel_log_enabled(KEEL_LOG_ERROR))
    return 12;
  errno = EAGAIN;
  keel_log(KEEL_LOG_ERROR, "keeps errno");
  return errno == EAGAIN ? 0 : 13;
}

static void check_sample(const parsed_t *p, bool json) {
  assert_string_equal(val(p, "level"), "warn");
  assert_string_equal(val(p, "msg"), "accepted");
  assert_string_equal(val(p, "peer"), "127.0.0.1:5555");
  assert_string_equal(val(p, "fd"), "-3");
  assert_string_equal(val(p, "max"), "18446744073709551615");
  assert_true(strtod(val(p, "ratio"), NULL) == 0.25);
  assert_string_equal(val(p, "ok"), "true");
  assert_string_equal(val(p, "none"), json ? "null" : "(null)");
  assert_string_equal(val(p, "err"), keel_strerror(-ECONNRESET));
  assert_string_equal(val(p, "empty"), "");
  assert_null(get(p, "worker")); /* not logged from a worker */
  assert_null(get(p, "task"));
  if (json) {
    assert_int_equal(get(p, "fd")->kind, 'n');
    assert_int_equal(get(p, "max")->kind, 'n');
    assert_int_equal(get(p, "ok")->kind, 'b');
    assert_int_equal(get(p, "none")->kind, 'z');
    assert_int_equal(get(p, "peer")->kind, 's');
  } else {
    assert_int_equal(get(p, "peer")->kind, 'r'); /* a plain value stays bare */
    assert_int_equal(get(p, "msg")->kind, 'q');  /* msg is always quoted */
    assert_int_equal(get(p, "err")->kind, 'q');
  }
}

static void test_formats(void **state) {
  (void)state;
  lines_t *l = run_child(child_formats);
  parsed_t *p = malloc(sizeof *p);
  assert_non_null(p);
  assert_int_equal(l->n, 6);
  for (int i = 0; i < 6; i++) {
    bool json = i >= 2;
    parse_line(l, i, json, p);
    if (i % 2 == 0 && i < 4) {
      assert_string_equal(val(p, "level"), "info");
      assert_string_equal(val(p, "msg"), "hello 42");
      assert_int_equal(p->n, 3); /* ts, level, msg */
    } else if (i < 4) {
      check_sample(p, json);
      /* The order: ts, level, msg, then the fields as given. */
      assert_string_equal(p->kv[0].key, "ts");
      assert_string_equal(p->kv[2].key, "msg");
      assert_string_equal(p->kv[3].key, "peer");
      assert_string_equal(p->kv[p->n - 1].key, "empty");
    } else {
      assert_string_equal(val(p, "msg"), i == 4 ? "at debug" : "keeps errno");
      assert_string_equal(val(p, "level"), i == 4 ? "debug" : "error");
    }
  }
  free(p);
  free_lines(l);
}

static int child_env(void) {
  setenv("KEEL_LOG_FORMAT", "json", 1);
  setenv("KEEL_LOG", "warn", 1);
  keel_log(KEEL_LOG_INFO, "below warn");
  keel_log(KEEL_LOG_WARN, "from the environment");
  return 0;
}

static void test_env_settings(void **state) {
  (void)state;
  lines_t *l = run_child(child_env);
  parsed_t *p = malloc(sizeof *p);
  assert_non_null(p);
  assert_int_equal(l->n, 1);
  parse_line(l, 0, true, p);
  assert_string_equal(val(p, "msg"), "from the environment");
  free(p);
  free_lines(l);
}

/* ---- Hostile strings ---------------------------------------------------------- */

static const char *const hostile[] = {
    "quote \" backslash \\ equals = brace } bracket ] comma ,",
    "newline\nreturn\rtab\tbell\a escape\x1b del\x7f nul-free",
    "invalid \xff lone \xc3 short \xe2\x82 end",
    "overlong \xc0\xaf surrogate \xed\xa0\x80 big \xf4\x90\x80\x80 end",
    "utf-8 \xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e",
    "",
    " spaces around ",
    "\xc3",
};
#define NHOSTILE (sizeof hostile / sizeof hostile[0])

static int child_hostile(void) {
  keel_log_set_rate_limit(0, 0);
  for (int json = 0; json < 2; json++) {
    keel_log_set_format(json ? KEEL_LOG_JSON : KEEL_LOG_TEXT);
    for (size_t i = 0; i < NHOSTILE; i++)
      KEEL_LOG_FIELDS(KEEL_LOG_INFO, hostile[i], keel_log_str(hostile[i], hostile[i]),
                      keel_log_str("v", hostile[i]));
    for (size_t i = 0; i < NHOSTILE; i++)
      keel_log(KEEL_LOG_INFO, "%s", hostile[i]);
  }
  return 0;
}

/* What JSON must carry for s: s with each byte that starts no valid UTF-8
 * sequence replaced by U+FFFD. */
static void json_expected(const char *s, char *out) {
  const unsigned char *u = (const unsigned char *)s;
  size_t n = strlen(s), i = 0, o = 0;
  while (i < n) {
    size_t len = utf8_valid(u + i, n - i);
    if (len == 0) {
      memcpy(out + o, "\xef\xbf\xbd", 3);
      o += 3;
      i++;
    } else {
      memcpy(out + o, u + i, len);
      o += len;
      i += len;
    }
  }
  out[o] = '\0';
}

/* What a text key shows for s: bytes that would break the line are '_'. */
static void text_key_expected(const char *s, char *out) {
  size_t i = 0;
  for (; s[i]; i++) {
    unsigned char c = (unsigned char)s[i];
    out[i] = c <= ' ' || c >= 0x7f || c == '=' || c == '"' || c == '\\' ? '_' : (char)c;
  }
  out[i] = '\0';
  if (i == 0)
    strcpy(out, "_");
}

static void test_hostile_strings(void **state) {
  (void)state;
  lines_t *l = run_child(child_hostile);
  parsed_t *p = malloc(sizeof *p);
  assert_non_null(p);
  assert_int_equal(l->n, 4 * (int)NHOSTILE);
  for (int i = 0; i < l->n; i++) {
    bool json = i >= 2 * (int)NHOSTILE;
    size_t h = (size_t)i % NHOSTILE;
    bool fields = i % (2 * (int)NHOSTILE) < (int)NHOSTILE;
    char expected[512], key[512];
    parse_line(l, i, json, p);
    /* Text keeps every byte (\xHH); JSON replaces invalid UTF-8. */
    if (json)
      json_expected(hostile[h], expected);
    else
      strcpy(expected, hostile[h]);
    assert_string_equal(val(p, "msg"), expected);
    assert_int_equal(p->n, fields ? 5 : 3);
    if (!fields)
      continue;
    assert_string_equal(val(p, "v"), expected);
    if (json)
      json_expected(*hostile[h] ? hostile[h] : "_", key);
    else
      text_key_expected(hostile[h], key);
    assert_string_equal(p->kv[3].key, key);
    assert_string_equal(p->kv[3].val, expected);
  }
  free(p);
  free_lines(l);
}

/* ---- Long lines ----------------------------------------------------------- */

static int child_long(void) {
  static char big[3000], accents[1400], many_keys[200][8];
  keel_log_field_t many[200];
  memset(big, 'x', sizeof big - 1);
  for (size_t i = 0; i + 2 < sizeof accents; i += 2)
    memcpy(accents + i, "\xc3\xa9", 2);
  for (int i = 0; i < 200; i++) {
    snprintf(many_keys[i], sizeof many_keys[i], "k%d", i);
    many[i] = keel_log_int(many_keys[i], i);
  }
  keel_log_set_rate_limit(0, 0);
  for (int json = 0; json < 2; json++) {
    keel_log_set_format(json ? KEEL_LOG_JSON : KEEL_LOG_TEXT);
    keel_log(KEEL_LOG_INFO, "%s", big);
    keel_log(KEEL_LOG_INFO, "%s", accents); /* cut by vsnprintf, maybe mid-character */
    KEEL_LOG_FIELDS(KEEL_LOG_INFO, "long value", keel_log_int("first", 1),
                    keel_log_str("value", accents), keel_log_int("after", 2));
    keel_log_fields(KEEL_LOG_INFO, "many fields", many, 200);
  }
  return 0;
}

/* True if s is "é" repeated (at least once). */
static bool all_accents(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n % 2)
    return false;
  for (size_t i = 0; i < n; i += 2)
    if (memcmp(s + i, "\xc3\xa9", 2) != 0)
      return false;
  return true;
}

static void test_long_lines(void **state) {
  (void)state;
  lines_t *l = run_child(child_long);
  parsed_t *p = malloc(sizeof *p);
  assert_non_null(p);
  assert_int_equal(l->n, 8);
  for (int i = 0; i < l->n; i++) {
    bool json = i >= 4;
    assert_true(l->len[i] <= KEEL_LOG_LINE_MAX);
    parse_line(l, i, json, p);
    const kv_t *last = &p->kv[p->n - 1];
    assert_string_equal(last->key, "truncated");
    assert_string_equal(last->val, "true");
    const char *msg = val(p, "msg");
    switch (i % 4) {
    case 0: /* the message cut at KEEL_LOG_MSG_MAX - 1 bytes */
      assert_int_equal(strlen(msg), KEEL_LOG_MSG_MAX - 1);
      assert_int_equal(strspn(msg, "x"), KEEL_LOG_MSG_MAX - 1);
      break;
    case 1: /* cut between characters */
      assert_true(all_accents(msg));
      assert_true(strlen(msg) >= KEEL_LOG_MSG_MAX - 2);
      break;
    case 2: /* the value cut between characters, the field after it left out */
      assert_string_equal(val(p, "first"), "1");
      assert_true(all_accents(val(p, "value")));
      assert_true(strlen(val(p, "value")) > 500);
      assert_null(get(p, "after"));
      assert_true(l->len[i] > KEEL_LOG_LINE_MAX - 64);
      break;
    case 3: /* whole fields, in order, then the cut */
      assert_true(p->n > 20 && p->n < 200);
      for (int k = 3; k < p->n - 1; k++) {
        char key[16], num[16];
        snprintf(key, sizeof key, "k%d", k - 3);
        snprintf(num, sizeof num, "%d", k - 3);
        assert_string_equal(p->kv[k].key, key);
        assert_string_equal(p->kv[k].val, num);
      }
      break;
    }
  }
  free(p);
  free_lines(l);
}

/* ---- Rate limit ------------------------------------------------------------ */

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static int child_rate(void) {
  keel_log_set_format(KEEL_LOG_JSON);
  /* Windows of a minute: nothing passes them while the test runs, however
   * slow the machine; then a window of 1 ms ends them all. */
  keel_log_set_rate_limit(3, 60000);
  for (int i = 0; i < 10; i++)
    keel_log(KEEL_LOG_WARN, "flood"); /* 3 written */
  for (int i = 0; i < 10; i++)
    KEEL_LOG_FIELDS(KEEL_LOG_WARN, "flood", keel_log_int("i", i)); /* distinct: 10 */
  for (int i = 0; i < 5; i++)
    keel_log(KEEL_LOG_ERROR, "flood"); /* another level: 3 */
  keel_log_set_rate_limit(3, 1);
  sleep_ms(20);
  keel_log(KEEL_LOG_WARN, "flood"); /* after the counts 7 and 2 */
  if (keel_log_flush() != 0)
    return 20; /* reported already */
  keel_log_set_rate_limit(2, 60000);
  for (int i = 0; i < 6; i++)
    keel_log(KEEL_LOG_INFO, "burst"); /* 2 */
  if (keel_log_flush() != 1)
    return 21; /* burst: 4 */
  for (int i = 0; i < 5; i++)
    keel_log(KEEL_LOG_INFO, "sweep"); /* 2 */
  keel_log_set_rate_limit(2, 1);
  sleep_ms(20);
  keel_log(KEEL_LOG_INFO, "unrelated"); /* after the count of sweep, 3 */
  keel_log_set_rate_limit(0, 0);
  for (int i = 0; i < 30; i++)
    keel_log(KEEL_LOG_INFO, "unlimited"); /* 30 */
  /* A summary repeats a long message's start, cut between characters. */
  char accents[201] = "";
  for (int i = 0; i < 100; i++)
    strcat(accents, "\xc3\xa9");
  keel_log_set_rate_limit(1, 60000);
  for (int i = 0; i < 3; i++)
    keel_log(KEEL_LOG_INFO, "%s", accents); /* 1 */
  return keel_log_flush() == 1 ? 0 : 22;
}

/* Checks line i is (level, msg) with no fields but those given by the
 * caller; returns the parsed line. */
static const parsed_t *expect_line(const lines_t *l, int i, parsed_t *p, const char *level,
                                   const char *msg) {
  parse_line(l, i, true, p);
  if (strcmp(val(p, "level"), level) != 0 || strcmp(val(p, "msg"), msg) != 0)
    fail_msg("line %d: want %s \"%s\": %.*s", i, level, msg, (int)l->len[i], l->line[i]);
  return p;
}

static void expect_summary(const lines_t *l, int i, parsed_t *p, const char *level,
                           const char *line, const char *count) {
  expect_line(l, i, p, level, "suppressed identical lines");
  assert_string_equal(val(p, "line"), line);
  assert_string_equal(val(p, "suppressed"), count);
  assert_int_equal(get(p, "suppressed")->kind, 'n');
}

static void test_rate_limit(void **state) {
  (void)state;
  lines_t *l = run_child(child_rate);
  parsed_t *p = malloc(sizeof *p);
  assert_non_null(p);
  int i = 0;
  for (int k = 0; k < 3; k++)
    assert_int_equal(expect_line(l, i++, p, "warn", "flood")->n, 3);
  for (int k = 0; k < 10; k++) {
    char num[8];
    snprintf(num, sizeof num, "%d", k);
    assert_string_equal(val(expect_line(l, i++, p, "warn", "flood"), "i"), num);
  }
  for (int k = 0; k < 3; k++)
    expect_line(l, i++, p, "error", "flood");
  /* Both counts, in either order, then the line that came after them. */
  bool seen_warn = false, seen_error = false;
  for (int k = 0; k < 2; k++) {
    parse_line(l, i, true, p);
    bool warn = strcmp(val(p, "level"), "warn") == 0;
    expect_summary(l, i++, p, warn ? "warn" : "error", "flood", warn ? "7" : "2");
    seen_warn |= warn;
    seen_error |= !warn;
  }
  assert_true(seen_warn && seen_error);
  expect_line(l, i++, p, "warn", "flood");
  for (int k = 0; k < 2; k++)
    expect_line(l, i++, p, "info", "burst");
  expect_summary(l, i++, p, "info", "burst", "4");
  for (int k = 0; k < 2; k++)
    expect_line(l, i++, p, "info", "sweep");
  expect_summary(l, i++, p, "info", "sweep", "3");
  expect_line(l, i++, p, "info", "unrelated");
  for (int k = 0; k < 30; k++)
    expect_line(l, i++, p, "info", "unlimited");
  parse_line(l, i++, true, p);
  assert_int_equal(strlen(val(p, "msg")), 200);
  expect_line(l, i, p, "info", "suppressed identical lines");
  assert_string_equal(val(p, "suppressed"), "2");
  assert_true(all_accents(val(p, "line")));
  assert_int_equal(strlen(val(p, "line")), 126); /* 127 bytes would split one */
  assert_int_equal(++i, l->n);
  free(p);
  free_lines(l);
}

/* Timing-free: with a short window whose passing depends on the machine,
 * every line is either written or counted in a summary, exactly once. */
static int child_rate_windows(void) {
  keel_log_set_format(KEEL_LOG_JSON);
  keel_log_set_rate_limit(5, 20);
  for (int round = 0; round < 40; round++) {
    for (int i = 0; i < 25; i++)
      keel_log(KEEL_LOG_WARN, "tick");
    sleep_ms(2);
  }
  keel_log_flush();
  return 0;
}

static void test_rate_limit_accounts_for_every_line(void **state) {
  (void)state;
  lines_t *l = run_child(child_rate_windows);
  parsed_t *p = malloc(sizeof *p);
  assert_non_null(p);
  long written = 0, counted = 0;
  for (int i = 0; i < l->n; i++) {
    parse_line(l, i, true, p);
    if (strcmp(val(p, "msg"), "tick") == 0) {
      written++;
    } else {
      expect_summary(l, i, p, "warn", "tick", val(p, "suppressed"));
      counted += atol(val(p, "suppressed"));
    }
  }
  assert_true(written >= 5);
  assert_int_equal(written + counted, 1000);
  fprintf(stderr, "# %ld written, %ld counted\n", written, counted);
  free(p);
  free_lines(l);
}

/* ---- The sink -------------------------------------------------------------- */

struct sink_state {
  int set_in_sink_rc;
  int calls;
};

static void to_stderr(const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, s, n);
    if (w <= 0)
      return;
    s += w;
    n -= (size_t)w;
  }
}

/* Writes "SINK <level> <worker> <task> <msg> <nfields> <key0>|<line>". */
static void test_sink_fn(void *arg, const keel_log_record_t *rec, const char *line, size_t len) {
  struct sink_state *st = arg;
  char buf[2048];
  if (st->calls++ == 0) {
    st->set_in_sink_rc = keel_log_set_sink(NULL, NULL);
    keel_log(KEEL_LOG_INFO, "logged from the sink"); /* straight to stderr */
  }
  int n = snprintf(buf, sizeof buf, "SINK %s %d %s %s %zu %s|", keel_log_level_name(rec->level),
                   rec->worker, rec->task ? rec->task : "-", rec->msg, rec->nfields,
                   rec->nfields ? rec->fields[0].key : "-");
  bool framed = len > 0 && line[len - 1] == '\n' && line[len] == '\0' && strlen(line) == len;
  if (!framed)
    n = snprintf(buf, sizeof buf, "SINK bad framing\n");
  else if ((size_t)n + len < sizeof buf) {
    memcpy(buf + n, line, len);
    n += (int)len;
  }
  to_stderr(buf, (size_t)n);
}

static int child_sink(void) {
  static struct sink_state st;
  keel_log_set_format(KEEL_LOG_JSON);
  if (keel_log_set_sink(test_sink_fn, &st) != 0)
    return 30;
  KEEL_LOG_FIELDS(KEEL_LOG_WARN, "to the sink", keel_log_str("peer", "x y"), keel_log_int("n", 5));
  keel_log(KEEL_LOG_ERROR, "again");
  if (st.set_in_sink_rc != -EDEADLK || st.calls != 2)
    return 31;
  if (keel_log_set_sink(NULL, NULL) != 0)
    return 32;
  keel_log(KEEL_LOG_INFO, "back on stderr");
  return st.calls == 2 ? 0 : 33;
}

static void test_sink(void **state) {
  (void)state;
  lines_t *l = run_child(child_sink);
  parsed_t *p = malloc(sizeof *p);
  assert_non_null(p);
  assert_int_equal(l->n, 4);
  parse_line(l, 0, true, p);
  assert_string_equal(val(p, "msg"), "logged from the sink");
  const char *want[] = {"SINK warn -1 - to the sink 2 peer|", "SINK error -1 - again 0 -|"};
  for (int i = 1; i <= 2; i++) {
    size_t n = strlen(want[i - 1]);
    if (l->len[i] < n || memcmp(l->line[i], want[i - 1], n) != 0)
      fail_msg("line %d: want \"%s...\": %.*s", i, want[i - 1], (int)l->len[i], l->line[i]);
    /* The line the sink got is the formatted one. */
    assert_true(parse_json_line(l->line[i] + n, l->len[i] - n, p));
    assert_string_equal(val(p, "msg"), i == 1 ? "to the sink" : "again");
    if (i == 1)
      assert_string_equal(val(p, "peer"), "x y");
  }
  parse_line(l, 3, true, p);
  assert_string_equal(val(p, "msg"), "back on stderr");
  free(p);
  free_lines(l);
}

/* ---- Workers and tasks ------------------------------------------------------------ */

static keel_backend_t task_backend;

static void blocking_logs(void *data) {
  (void)data;
  keel_log(KEEL_LOG_INFO, "from the blocking pool");
}

static int conn_task(void *arg) {
  (void)arg;
  KEEL_LOG_FIELDS(KEEL_LOG_INFO, "accepted", keel_log_str("peer", "127.0.0.1:5555"));
  return 0;
}

static int odd_task(void *arg) {
  (void)arg;
  keel_log(KEEL_LOG_INFO, "odd");
  return 0;
}

static int tasks_main(void *arg) {
  (void)arg;
  keel_log(KEEL_LOG_INFO, "from main");
  keel_scope_t *s = NULL;
  int rc = keel_scope_open(NULL, &s);
  if (rc != 0)
    return rc;
  keel_spawn_opts_t conn = {.name = "conn", .on_worker = KEEL_WORKER(1)};
  keel_spawn_opts_t odd = {.name = "odd name \"q\"", .on_worker = KEEL_WORKER(0)};
  rc = keel_spawn(s, conn_task, NULL, &conn);
  if (rc == 0)
    rc = keel_scope_join(s); /* one after the other: a fixed order of lines */
  if (rc == 0)
    rc = keel_spawn(s, odd_task, NULL, &odd);
  int join_rc = keel_scope_join(s);
  keel_scope_close(s);
  if (rc == 0)
    rc = join_rc;
  if (rc == 0)
    rc = keel_blocking_run(blocking_logs, NULL, 0, NULL);
  return rc;
}

static int child_tasks(void) {
  for (int json = 0; json < 2; json++) {
    keel_log_set_format(json ? KEEL_LOG_JSON : KEEL_LOG_TEXT);
    int rc = kt_run(task_backend, 2, tasks_main, NULL);
    if (rc != 0)
      return 40;
    keel_log(KEEL_LOG_INFO, "after the run");
  }
  return 0;
}

static void test_worker_and_task(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    task_backend = b;
    lines_t *l = run_child(child_tasks);
    parsed_t *p = malloc(sizeof *p);
    assert_non_null(p);
    static const struct {
      const char *msg, *worker, *task;
    } want[] = {{"from main", "0", "main"},
                {"accepted", "1", "conn"},
                {"odd", "0", "odd name \"q\""},
                {"from the blocking pool", NULL, NULL},
                {"after the run", NULL, NULL}};
    int i = 0;
    for (int json = 0; json < 2; json++) {
      for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        /* A backend's own notes (a fallback) may come first. */
        do
          parse_line(l, i++, json, p);
        while (strcmp(val(p, "msg"), want[k].msg) != 0 && i < l->n);
        assert_string_equal(val(p, "msg"), want[k].msg);
        if (want[k].worker) {
          assert_string_equal(val(p, "worker"), want[k].worker);
          assert_string_equal(val(p, "task"), want[k].task);
          assert_int_equal(get(p, "worker")->kind, json ? 'n' : 'r');
        } else {
          assert_null(get(p, "worker"));
          assert_null(get(p, "task"));
        }
      }
      assert_string_equal(val(p, "msg"), "after the run");
    }
    free(p);
    free_lines(l);
  }
}

/* ---- Threads ------------------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD (1000 / KT_SCALE)

struct counting_sink {
  atomic_long calls;
  atomic_int inside;
};

struct thread_arg {
  int id;
  const char *pad;
  int mode; /* 0: distinct lines; 1: one identical line */
};

static void *logging_thread(void *arg) {
  struct thread_arg *a = arg;
  for (int i = 0; i < PER_THREAD; i++) {
    if (a->mode == 0)
      KEEL_LOG_FIELDS(KEEL_LOG_INFO, "concurrent", keel_log_int("thread", a->id),
                      keel_log_int("seq", i), keel_log_str("pad", a->pad));
    else
      keel_log(KEEL_LOG_WARN, "same from every thread");
  }
  return NULL;
}

static void run_threads(int mode, const char *pad) {
  pthread_t threads[THREADS];
  struct thread_arg args[THREADS];
  for (int t = 0; t < THREADS; t++) {
    args[t] = (struct thread_arg){t, pad, mode};
    pthread_create(&threads[t], NULL, logging_thread, &args[t]);
  }
  for (int t = 0; t < THREADS; t++)
    pthread_join(threads[t], NULL);
}

static void counting_sink_fn(void *arg, const keel_log_record_t *rec, const char *line,
                             size_t len) {
  struct counting_sink *c = arg;
  (void)rec;
  (void)line;
  (void)len;
  atomic_fetch_add(&c->inside, 1);
  atomic_fetch_add(&c->calls, 1);
  atomic_fetch_sub(&c->inside, 1);
}

struct swap_arg {
  atomic_bool stop;
  int failures;
  struct counting_sink sinks[2];
};

/* Swaps the sink back and forth while the threads log: once set_sink
 * returns, the sink it replaced is not running and its count stays put
 * until it is set again. */
static void *swapping_thread(void *arg) {
  struct swap_arg *s = arg;
  long retired_calls[2] = {0, 0}; /* sinks[1] has not been set yet */
  for (int k = 1; !atomic_load(&s->stop); k++) {
    struct counting_sink *next = &s->sinks[k % 2], *old = &s->sinks[(k + 1) % 2];
    if (atomic_load(&next->calls) != retired_calls[k % 2])
      s->failures++;
    keel_log_set_sink(counting_sink_fn, next);
    if (atomic_load(&old->inside) != 0)
      s->failures++;
    retired_calls[(k + 1) % 2] = atomic_load(&old->calls);
    sched_yield();
  }
  return NULL;
}

/* Reads back the lines of mode 0 from fd: each whole, each (thread, seq)
 * once. Returns the number of failures. */
static int check_concurrent_lines(int fd, const char *pad) {
  static char text[THREADS * PER_THREAD * 600 + 1];
  static parsed_t p;
  static bool seen[THREADS][PER_THREAD];
  ssize_t n = pread(fd, text, sizeof text - 1, 0);
  if (n <= 0 || n == (ssize_t)sizeof text - 1)
    return 1;
  text[n] = '\0';
  int lines = 0, bad = 0;
  for (char *s = text, *nl; *s; s = nl + 1, lines++) {
    nl = strchr(s, '\n');
    if (!nl || !parse_json_line(s, (size_t)(nl + 1 - s), &p) || strcmp(val(&p, "pad"), pad) != 0) {
      printf("not a whole line: %.*s\n", nl ? (int)(nl - s) : 80, s);
      return bad + 1;
    }
    int t = atoi(val(&p, "thread")), i = atoi(val(&p, "seq"));
    if (t < 0 || t >= THREADS || i < 0 || i >= PER_THREAD || seen[t][i])
      bad++;
    else
      seen[t][i] = true;
  }
  if (lines != THREADS * PER_THREAD) {
    printf("%d lines, want %d\n", lines, THREADS * PER_THREAD);
    bad++;
  }
  return bad;
}

static int child_threads(void) {
  char pad[300];
  memset(pad, 'p', sizeof pad - 1);
  memcpy(pad, "a \"quoted\" pad\twith escapes ", 28);
  pad[sizeof pad - 1] = '\0';
  keel_log_set_format(KEEL_LOG_JSON);
  keel_log_set_rate_limit(0, 0);
  /* stderr to a file: the lines are many, and a file keeps them for
   * reading back (an O_APPEND write lands whole, as a pipe's does). */
  char path[] = "/tmp/keel-test-log-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0)
    return 50;
  unlink(path);
  int saved = dup(STDERR_FILENO);
  fcntl(fd, F_SETFL, O_APPEND);
  dup2(fd, STDERR_FILENO);
  run_threads(0, pad);
  dup2(saved, STDERR_FILENO);
  int bad = check_concurrent_lines(fd, pad);
  close(fd);
  if (bad)
    return 51;

  /* One line from every thread at once: exactly the burst written. */
  struct counting_sink counter = {0};
  keel_log_set_rate_limit(5, 600000);
  keel_log_set_sink(counting_sink_fn, &counter);
  run_threads(1, NULL);
  if (atomic_load(&counter.calls) != 5) {
    printf("%ld identical lines written, want 5\n", atomic_load(&counter.calls));
    return 52;
  }
  if (keel_log_flush() != 1 || atomic_load(&counter.calls) != 6)
    return 53;

  /* Sinks swapped while the threads log: every line reaches one of them. */
  static struct swap_arg swap;
  pthread_t swapper;
  keel_log_set_rate_limit(0, 0);
  keel_log_set_sink(counting_sink_fn, &swap.sinks[0]); /* the swapper starts from it */
  pthread_create(&swapper, NULL, swapping_thread, &swap);
  run_threads(0, pad);
  atomic_store(&swap.stop, true);
  pthread_join(swapper, NULL);
  keel_log_set_sink(NULL, NULL);
  long total = atomic_load(&swap.sinks[0].calls) + atomic_load(&swap.sinks[1].calls);
  if (swap.failures || total != THREADS * PER_THREAD) {
    printf("%d swap failures, %ld lines of %d\n", swap.failures, total, THREADS * PER_THREAD);
    return 54;
  }
  return 0;
}

static void test_threads(void **state) {
  (void)state;
  lines_t *l = run_child(child_threads);
  assert_int_equal(l->n, 0); /* every line went to the file or a sink */
  free_lines(l);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_formats),
      cmocka_unit_test(test_env_settings),
      cmocka_unit_test(test_hostile_strings),
      cmocka_unit_test(test_long_lines),
      cmocka_unit_test(test_rate_limit),
      cmocka_unit_test(test_rate_limit_accounts_for_every_line),
      cmocka_unit_test(test_sink),
      cmocka_unit_test(test_worker_and_task),
      cmocka_unit_test(test_threads),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
