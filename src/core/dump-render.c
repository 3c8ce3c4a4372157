/* The task dump's two renderings of a snapshot (src/core/dump.c): text, an
 * indented tree for people, and one JSON document for tools. Names come
 * from users and may hold anything: the text escapes control bytes and
 * bytes that are not UTF-8 (\xNN); JSON escapes what it must and replaces
 * bytes that are not UTF-8 with U+FFFD, so that the document is valid. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "dump-internal.h"

static const struct {
  const char *json, *text;
} kind_names[KEEL__WAIT_KINDS] = {
    [KEEL__WAIT_NONE] = {"other", "other"},
    [KEEL__WAIT_RECV] = {"recv", "recv"},
    [KEEL__WAIT_SEND] = {"send", "send"},
    [KEEL__WAIT_READABLE] = {"readable", "readable"},
    [KEEL__WAIT_ACCEPT] = {"accept", "accept"},
    [KEEL__WAIT_ACCEPT_BACKOFF] = {"accept_backoff", "accept backoff"},
    [KEEL__WAIT_CONNECT] = {"connect", "connect"},
    [KEEL__WAIT_CLOSE] = {"close", "close"},
    [KEEL__WAIT_TLS] = {"tls", "tls turn"},
    [KEEL__WAIT_SLEEP] = {"sleep", "sleep"},
    [KEEL__WAIT_ALERT] = {"alert", "alert"},
    [KEEL__WAIT_JOIN] = {"join", "join"},
    [KEEL__WAIT_CHAN_SEND] = {"chan_send", "chan send"},
    [KEEL__WAIT_CHAN_RECV] = {"chan_recv", "chan recv"},
    [KEEL__WAIT_MUTEX] = {"mutex", "mutex"},
    [KEEL__WAIT_RWLOCK_READ] = {"rwlock_read", "rwlock read"},
    [KEEL__WAIT_RWLOCK_WRITE] = {"rwlock_write", "rwlock write"},
    [KEEL__WAIT_SEM] = {"semaphore", "semaphore"},
    [KEEL__WAIT_NOTIFY] = {"notify", "notify"},
    [KEEL__WAIT_BARRIER] = {"barrier", "barrier"},
    [KEEL__WAIT_ONCE] = {"once", "once"},
    [KEEL__WAIT_ONESHOT] = {"oneshot", "oneshot"},
    [KEEL__WAIT_WATCH] = {"watch", "watch"},
    [KEEL__WAIT_BROADCAST] = {"broadcast", "broadcast"},
    [KEEL__WAIT_BLOCKING] = {"blocking", "blocking call"},
    [KEEL__WAIT_RESOLVE] = {"resolve", "resolve"},
    [KEEL__WAIT_BATCH] = {"batch", "batch"},
    [KEEL__WAIT_RATELIMIT] = {"ratelimit", "rate limit"},
};

static const char *state_name(const keel__snap_task_t *t) {
  if (t->stackless)
    return "parked";
  switch (t->state) {
  case KEEL__TASK_NEW:
    return "new";
  case KEEL__TASK_READY:
    return "ready";
  case KEEL__TASK_RUNNING:
    return "running";
  case KEEL__TASK_BLOCKED:
    return "blocked";
  default:
    return "done";
  }
}

static bool waiting(const keel__snap_task_t *t) {
  return t->stackless || t->state == KEEL__TASK_BLOCKED;
}

/* ---- What a wait is on -------------------------------------------------------------- */

/* Facts looked up after the locks are dropped: the address of the socket
 * waited on (its descriptor may have been closed and reused since the
 * snapshot: then the address is another socket's, or none, which a
 * diagnostic can afford), and the scope a join waits for. */
typedef struct wait_facts {
  const char *addr_key; /* "peer", "local" (a listener), or NULL: none */
  char addr[INET6_ADDRSTRLEN + 8];
  int join_scope; /* index in the snapshot, or -1 */
} wait_facts_t;

static bool sock_addr(int fd, bool peer, char *out, size_t cap) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if ((peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
            : getsockname(fd, (struct sockaddr *)&ss, &len)) != 0)
    return false;
  char host[INET6_ADDRSTRLEN];
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(in->sin_port));
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    snprintf(out, cap, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
    return true;
  }
  return false;
}

static wait_facts_t wait_facts(const keel__snap_t *sn, const keel__snap_task_t *t) {
  wait_facts_t f = {NULL, "", -1};
  if (t->fd >= 0) {
    bool listener = t->kind == KEEL__WAIT_ACCEPT || t->kind == KEEL__WAIT_ACCEPT_BACKOFF;
    if (sock_addr(t->fd, !listener, f.addr, sizeof f.addr))
      f.addr_key = listener ? "local" : "peer";
  }
  if (t->kind == KEEL__WAIT_JOIN)
    for (size_t i = 0; i < sn->nscopes && t->object; i++)
      if (sn->scopes[i].addr == t->object)
        f.join_scope = (int)i;
  return f;
}

/* ---- Strings ------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence that starts s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0], cp, min;
  size_t len;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    len = 2, cp = c & 0x1f, min = 0x80;
  else if ((c & 0xf0) == 0xe0)
    len = 3, cp = c & 0x0f, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4)
    len = 4, cp = c & 0x07, min = 0x10000;
  else
    return 0;
  if (len > n)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

/* s with ', \ and control bytes escaped, and bytes that are not UTF-8 as \xNN. */
static void put_text(keel__dumpbuf_t *b, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s);
  while (n > 0) {
    size_t k = *p < 0x20 || *p == 0x7f ? 0 : utf8_len(p, n);
    if (k == 0)
      keel__dumpbuf_printf(b, "\\x%02x", *p);
    else if (*p == '\'' || *p == '\\')
      keel__dumpbuf_printf(b, "\\%c", *p);
    else
      keel__dumpbuf_put(b, (const char *)p, k);
    k = k ? k : 1;
    p += k;
    n -= k;
  }
}

/* s as a JSON string, quotes included. */
static void put_json_str(keel__dumpbuf_t *b, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s);
  keel__dumpbuf_put(b, "\"", 1);
  while (n > 0) {
    size_t k = *p < 0x20 ? 0 : utf8_len(p, n);
    if (*p < 0x20)
      keel__dumpbuf_printf(b, "\\u%04x", *p);
    else if (k == 0)
      keel__dumpbuf_put(b, "\\ufffd", 6);
    else if (*p == '"' || *p == '\\')
      keel__dumpbuf_printf(b, "\\%c", *p);
    else
      keel__dumpbuf_put(b, (const char *)p, k);
    k = k ? k : 1;
    p += k;
    n -= k;
  }
  keel__dumpbuf_put(b, "\"", 1);
}

/* "root/a/b": the scope's path, truncated to cap. */
static void scope_path(const keel__snap_t *sn, int i, char *out, size_t cap) {
  int chain[64];
  int depth = 0;
  for (int s = i; s >= 0 && depth < 64; s = sn->scopes[s].parent)
    chain[depth++] = s;
  size_t len = 0;
  out[0] = '\0';
  while (depth-- > 0 && len + 1 < cap) {
    int n = snprintf(out + len, cap - len, "%s%s", len ? "/" : "", sn->scopes[chain[depth]].name);
    len += n > 0 ? (size_t)n : 0;
  }
}

/* "1.234s" ("+1.234s" / "-1.234s" with sign). */
static void put_secs(keel__dumpbuf_t *b, int64_t ns, bool sign) {
  const char *s = ns < 0 ? "-" : sign ? "+" : "";
  uint64_t a = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
  keel__dumpbuf_printf(b, "%s%llu.%03llus", s, (unsigned long long)(a / 1000000000),
                       (unsigned long long)(a % 1000000000 / 1000000));
}

static int64_t age_of(const keel__snap_t *sn, const keel__snap_task_t *t) {
  return sn->now_ns > t->since_ns ? sn->now_ns - t->since_ns : 0;
}

/* ---- Text ---------------------------------------------------------------------------- */

static void text_wait(const keel__snap_t *sn, const keel__snap_task_t *t, keel__dumpbuf_t *b) {
  wait_facts_t f = wait_facts(sn, t);
  keel__dumpbuf_printf(b, "%s", kind_names[t->kind].text);
  if (t->fd >= 0)
    keel__dumpbuf_printf(b, " fd=%d", t->fd);
  if (f.addr_key)
    keel__dumpbuf_printf(b, " %s=%s", f.addr_key, f.addr);
  if (f.join_scope >= 0) {
    char path[512];
    scope_path(sn, f.join_scope, path, sizeof path);
    keel__dumpbuf_put(b, " ", 1);
    put_text(b, path);
  } else if (t->object && t->kind == KEEL__WAIT_BLOCKING) {
    keel__dumpbuf_printf(b, " fn=%p", t->object);
  } else if (t->object && t->fd < 0) {
    keel__dumpbuf_printf(b, " @%p", t->object);
  }
  if (t->until_set && t->until_ns != KEEL_DEADLINE_NONE) {
    keel__dumpbuf_put(b, " until ", 7);
    put_secs(b, t->until_ns - sn->now_ns, true);
  }
}

static void text_task(const keel__snap_t *sn, const keel__snap_task_t *t, keel__dumpbuf_t *b) {
  keel__dumpbuf_printf(b, "%*stask '", 2 * (sn->scopes[t->scope].depth + 1), "");
  put_text(b, t->name);
  keel__dumpbuf_printf(b, "' [worker %d] %s", t->worker,
                       t->stackless ? "parked without a stack" : state_name(t));
  if (waiting(t)) {
    keel__dumpbuf_put(b, " ", 1);
    put_secs(b, age_of(sn, t), false);
    keel__dumpbuf_put(b, ": ", 2);
    text_wait(sn, t, b);
    if (t->deadline_ns != KEEL_DEADLINE_NONE) {
      keel__dumpbuf_put(b, ", deadline ", 11);
      put_secs(b, t->deadline_ns - sn->now_ns, true);
    }
  }
  if (t->activity) {
    keel__dumpbuf_put(b, " (", 2);
    put_text(b, t->activity);
    keel__dumpbuf_put(b, ")", 1);
  }
  keel__dumpbuf_put(b, "\n", 1);
}

static void text_scope(const keel__snap_t *sn, int i, keel__dumpbuf_t *b) {
  const keel__snap_scope_t *s = &sn->scopes[i];
  char path[512];
  scope_path(sn, i, path, sizeof path);
  keel__dumpbuf_printf(b, "%*sscope ", 2 * s->depth, "");
  put_text(b, path);
  keel__dumpbuf_printf(b, ": %zu live", s->live);
  if (s->deadline_ns != KEEL_DEADLINE_NONE) {
    keel__dumpbuf_put(b, ", deadline ", 11);
    put_secs(b, s->deadline_ns - sn->now_ns, true);
  }
  if (s->cancel_reason)
    keel__dumpbuf_printf(b, ", cancelled (%s)",
                         keel_cancel_reason_name((keel_cancel_reason_t)s->cancel_reason));
  if (s->flags & KEEL_SCOPE_SHIELD)
    keel__dumpbuf_put(b, ", shield", 8);
  keel__dumpbuf_put(b, "\n", 1);
}

void keel__dump_text(const keel__snap_t *sn, keel__dumpbuf_t *out) {
  keel__dumpbuf_printf(out, "%zu task%s in %zu scope%s on %d worker%s\n", sn->ntasks,
                       sn->ntasks == 1 ? "" : "s", sn->nscopes, sn->nscopes == 1 ? "" : "s",
                       sn->workers, sn->workers == 1 ? "" : "s");
  size_t k = 0;
  for (size_t i = 0; i < sn->nscopes; i++) {
    text_scope(sn, (int)i, out);
    for (; k < sn->ntasks && sn->tasks[k].scope == (int)i; k++)
      text_task(sn, &sn->tasks[k], out);
  }
}

/* ---- JSON ---------------------------------------------------------------------------- */

static void json_wait(const keel__snap_t *sn, const keel__snap_task_t *t, keel__dumpbuf_t *b) {
  wait_facts_t f = wait_facts(sn, t);
  keel__dumpbuf_printf(b, ",\"wait\":{\"kind\":\"%s\"", kind_names[t->kind].json);
  if (t->fd >= 0)
    keel__dumpbuf_printf(b, ",\"fd\":%d", t->fd);
  if (f.addr_key)
    keel__dumpbuf_printf(b, ",\"%s\":\"%s\"", f.addr_key, f.addr);
  if (f.join_scope >= 0) {
    char path[512];
    scope_path(sn, f.join_scope, path, sizeof path);
    keel__dumpbuf_put(b, ",\"scope\":", 9);
    put_json_str(b, path);
  } else if (t->object && t->kind == KEEL__WAIT_BLOCKING) {
    keel__dumpbuf_printf(b, ",\"fn\":\"%p\"", t->object);
  } else if (t->object) {
    keel__dumpbuf_printf(b, ",\"object\":\"%p\"", t->object);
  }
  if (t->until_set && t->until_ns != KEEL_DEADLINE_NONE)
    keel__dumpbuf_printf(b, ",\"until_in_ns\":%lld", (long long)(t->until_ns - sn->now_ns));
  keel__dumpbuf_put(b, "}", 1);
}

static void json_task(const keel__snap_t *sn, const keel__snap_task_t *t, keel__dumpbuf_t *b) {
  char path[512];
  scope_path(sn, t->scope, path, sizeof path);
  keel__dumpbuf_put(b, "{\"name\":", 8);
  put_json_str(b, t->name);
  keel__dumpbuf_put(b, ",\"scope\":", 9);
  put_json_str(b, path);
  keel__dumpbuf_printf(b, ",\"worker\":%d,\"state\":\"%s\"", t->worker, state_name(t));
  if (waiting(t)) {
    keel__dumpbuf_printf(b, ",\"age_ns\":%lld", (long long)age_of(sn, t));
    json_wait(sn, t, b);
    if (t->deadline_ns != KEEL_DEADLINE_NONE)
      keel__dumpbuf_printf(b, ",\"deadline_in_ns\":%lld", (long long)(t->deadline_ns - sn->now_ns));
  }
  if (t->activity) {
    keel__dumpbuf_put(b, ",\"activity\":", 12);
    put_json_str(b, t->activity);
  }
  keel__dumpbuf_put(b, "}", 1);
}

static void json_scope(const keel__snap_t *sn, int i, keel__dumpbuf_t *b) {
  const keel__snap_scope_t *s = &sn->scopes[i];
  char path[512];
  scope_path(sn, i, path, sizeof path);
  keel__dumpbuf_put(b, "{\"path\":", 8);
  put_json_str(b, path);
  keel__dumpbuf_put(b, ",\"name\":", 8);
  put_json_str(b, s->name);
  keel__dumpbuf_printf(b, ",\"live\":%zu", s->live);
  if (s->cancel_reason)
    keel__dumpbuf_printf(b, ",\"cancelled\":\"%s\"",
                         keel_cancel_reason_name((keel_cancel_reason_t)s->cancel_reason));
  if (s->deadline_ns != KEEL_DEADLINE_NONE)
    keel__dumpbuf_printf(b, ",\"deadline_in_ns\":%lld", (long long)(s->deadline_ns - sn->now_ns));
  keel__dumpbuf_printf(b, ",\"shield\":%s}", s->flags & KEEL_SCOPE_SHIELD ? "true" : "false");
}

void keel__dump_json(const keel__snap_t *sn, keel__dumpbuf_t *out) {
  keel__dumpbuf_printf(out, "{\"workers\":%d,\"now_ns\":%lld,\"tasks\":[", sn->workers,
                       (long long)sn->now_ns);
  for (size_t k = 0; k < sn->ntasks; k++) {
    keel__dumpbuf_put(out, k ? ",\n" : "\n", k ? 2 : 1);
    json_task(sn, &sn->tasks[k], out);
  }
  keel__dumpbuf_put(out, "],\n\"scopes\":[", 13);
  for (size_t i = 0; i < sn->nscopes; i++) {
    keel__dumpbuf_put(out, i ? ",\n" : "\n", i ? 2 : 1);
    json_scope(sn, (int)i, out);
  }
  keel__dumpbuf_put(out, "]}\n", 3);
}
