/* libFuzzer target: the JSON feed protocol of the WebSocket examples
 * (examples/feed-proto.c, which ws-client.c and ws-feed-server.c compile),
 * without a runtime: it does no I/O.
 *
 * The input: 1 control byte, then the bytes.
 *   in[0] % 3 == 0  the client reads messages from the server: the bytes,
 *                   cut at every 0xff byte, go to feed_classify in turn
 *                   (as text or binary: classify does not look). Checks:
 *                   what it says agrees with a plain reading of the JSON
 *                   (cJSON, no depth limit, on the big stack): a response's
 *                   id, an update's topic and seq, an auth answer's reason;
 *                   strings are whole; nothing nested deeper than
 *                   FEED_MAX_DEPTH is read.
 *             == 1  the server reads a client's message (the bytes) and
 *                   answers as ws-feed-server does (bit 2: authenticated;
 *                   bit 3: the token was right), then the client reads the
 *                   answer: an auth answer is AUTH_OK or AUTH_FAILED as the
 *                   token says, a sub or unsub answer IGNORE (ok) or
 *                   CONTROL, a request's answer a RESPONSE with its id (when
 *                   that id is a whole number the client could have sent).
 *             == 2  the client writes: the bytes, cut at 0xff, are a token,
 *                   a topic and a sequence number (8 bytes, big-endian);
 *                   the server reads auth, sub (with and without from) and
 *                   unsub back with the same strings and number, and the
 *                   client reads an update of the topic back.
 * Every call into feed-proto.c runs on a 64 KiB stack with a guard page,
 * the stack ws-client's classify has (keel's default task stack), switched
 * to with keel's own context switch (src/core/fiber.h): a parse that
 * recurses too deep crashes here as it would there. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "feed-proto.h"
#include "fiber.h"

#define FZ_STACK_SIZE (64 * 1024)

void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);

static void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fz_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("feed_proto: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

/* ---- A small stack ---------------------------------------------------------------- */

/* A fiber on its own stack, switched to with keel's context switch (no
 * system call, unlike swapcontext), which runs one call per switch. */
typedef struct small_stack {
  char *lo; /* above the guard page */
  keel__ctx_t caller, callee;
  void *caller_fake, *callee_fake; /* ASan's fake stacks of each side */
  const void *caller_bottom;
  size_t caller_size;
  void (*fn)(void *);
  void *arg;
} small_stack_t;

static small_stack_t stack;

static void small_stack_main(void *unused) {
  (void)unused;
  for (;;) {
    __sanitizer_finish_switch_fiber(stack.callee_fake, &stack.caller_bottom, &stack.caller_size);
    stack.fn(stack.arg);
    __sanitizer_start_switch_fiber(&stack.callee_fake, stack.caller_bottom, stack.caller_size);
    keel__ctx_switch(&stack.callee, &stack.caller);
  }
}

/* Runs fn(arg) on the small stack and returns when it has. */
static void on_small_stack(void (*fn)(void *), void *arg) {
  if (!stack.lo) {
    long page = sysconf(_SC_PAGESIZE);
    char *map = mmap(NULL, FZ_STACK_SIZE + (size_t)page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (map == MAP_FAILED || mprotect(map, (size_t)page, PROT_NONE) != 0)
      fz_fail("no small stack");
    stack.lo = map + page;
    keel__ctx_make(&stack.callee, stack.lo, FZ_STACK_SIZE, small_stack_main, NULL);
  }
  stack.fn = fn;
  stack.arg = arg;
  __sanitizer_start_switch_fiber(&stack.caller_fake, stack.lo, FZ_STACK_SIZE);
  keel__ctx_switch(&stack.caller, &stack.callee);
  __sanitizer_finish_switch_fiber(stack.caller_fake, NULL, NULL);
}

/* ---- The calls, each on the small stack ------------------------------------------- */

typedef struct classify_call {
  feed_reader_t *reader;
  const void *data;
  size_t len;
  keel_wsc_msg_t msg;
  int rc;
} classify_call_t;

static void classify_fn(void *arg) {
  classify_call_t *c = arg;
  c->rc = feed_classify(c->reader, c->data, c->len, &c->msg);
}

static int classify(feed_reader_t *reader, const void *data, size_t len, keel_wsc_msg_t *m) {
  classify_call_t c = {.reader = reader, .data = data, .len = len};
  on_small_stack(classify_fn, &c);
  *m = c.msg;
  return c.rc;
}

typedef struct request_call {
  const void *data;
  size_t len;
  feed_request_t *r;
  int rc;
} request_call_t;

static void request_fn(void *arg) {
  request_call_t *c = arg;
  c->rc = feed_request_parse(c->data, c->len, c->r);
}

static int request_parse(const void *data, size_t len, feed_request_t *r) {
  request_call_t c = {.data = data, .len = len, .r = r};
  on_small_stack(request_fn, &c);
  return c.rc;
}

/* ---- A plain reading ---------------------------------------------------------------- */

/* How deep arrays and objects nest in j (a scalar: 0). */
static int depth_of(const cJSON *j) {
  int deepest = 0;
  for (const cJSON *c = j ? j->child : NULL; c; c = c->next) {
    int d = depth_of(c);
    deepest = d > deepest ? d : deepest;
  }
  return cJSON_IsArray(j) || cJSON_IsObject(j) ? deepest + 1 : 0;
}

/* The same bytes read by cJSON alone, or NULL when they are not JSON.
 * *whole: the JSON is all there is (but whitespace). Only then are its
 * brackets all there are, and feed_parse must take it when it nests no
 * deeper than FEED_MAX_DEPTH; bytes after it may nest deeper. */
static cJSON *plain_parse(const void *data, size_t len, bool *whole) {
  const char *end = NULL;
  cJSON *j = cJSON_ParseWithLengthOpts(data, len, &end, false);
  *whole = j && end == (const char *)data + len;
  return j;
}

static const cJSON *member(const cJSON *j, const char *name) {
  return cJSON_GetObjectItemCaseSensitive(j, name);
}

static bool string_is(const cJSON *j, const char *s) {
  return cJSON_IsString(j) && s && strcmp(j->valuestring, s) == 0;
}

/* A whole number the client could have sent, read the plain way. */
static bool plain_whole(const cJSON *j, uint64_t *out) {
  if (!cJSON_IsNumber(j) || !(j->valuedouble >= 0) || j->valuedouble > FEED_MAX_NUMBER)
    return false;
  *out = (uint64_t)j->valuedouble;
  return (double)*out == j->valuedouble;
}

/* ---- Mode 0: the client reads the server's messages -------------------------------- */

/* Whether the message j breaks the protocol, read the plain way: a
 * response's id, or an update's seq, that is a number but not a whole one
 * within FEED_MAX_NUMBER; an update without a topic string. */
static bool breaks_protocol(const cJSON *j) {
  const cJSON *op = member(j, "op"), *id = member(j, "id"), *seq = member(j, "seq");
  uint64_t n;
  if (string_is(op, "auth"))
    return false;
  if (cJSON_IsNumber(id))
    return !plain_whole(id, &n);
  if (!string_is(op, "update"))
    return false;
  return !cJSON_IsString(member(j, "topic")) || (cJSON_IsNumber(seq) && !plain_whole(seq, &n));
}

static void check_kind(const keel_wsc_msg_t *m, const cJSON *j) {
  const cJSON *op = member(j, "op"), *id = member(j, "id"), *error = member(j, "error");
  uint64_t n;
  bool auth = string_is(op, "auth");
  switch (m->kind) {
  case KEEL_WSC_AUTH_OK:
  case KEEL_WSC_AUTH_FAILED:
    if (!auth || (m->kind == KEEL_WSC_AUTH_OK) != cJSON_IsTrue(member(j, "ok")))
      fz_fail("an auth answer that is not one");
    if (m->reason ? !string_is(error, m->reason) || m->reason_len != strlen(m->reason)
                  : cJSON_IsString(error))
      fz_fail("an auth answer's reason is not its error string");
    break;
  case KEEL_WSC_RESPONSE:
    if (auth || !plain_whole(id, &n) || n != m->id || m->error != (error != NULL))
      fz_fail("a response whose id %llu is not its whole number", (unsigned long long)m->id);
    break;
  case KEEL_WSC_UPDATE:
    if (auth || cJSON_IsNumber(id) || !string_is(op, "update") ||
        !string_is(member(j, "topic"), m->topic) || m->topic_len != strlen(m->topic))
      fz_fail("an update that is not one, or its topic is not its topic string");
    if (m->has_seq != cJSON_IsNumber(member(j, "seq")) ||
        (m->has_seq && (!plain_whole(member(j, "seq"), &n) || n != m->seq)))
      fz_fail("an update's seq %llu is not its number", (unsigned long long)m->seq);
    break;
  case KEEL_WSC_IGNORE:
  case KEEL_WSC_CONTROL:
    if (auth || cJSON_IsNumber(id) || (!string_is(op, "sub") && !string_is(op, "unsub")) ||
        (m->kind == KEEL_WSC_IGNORE) != cJSON_IsTrue(member(j, "ok")))
      fz_fail("a sub or unsub answer that is not one");
    break;
  case KEEL_WSC_SYSTEM:
    if (auth || cJSON_IsNumber(id) || string_is(op, "update") || string_is(op, "sub") ||
        string_is(op, "unsub"))
      fz_fail("a message of the protocol read as a system message");
    break;
  case KEEL_WSC_UNKNOWN:
    fz_fail("a JSON object of unknown kind");
  }
}

/* One message the client reads, against the plain reading of it. */
static void check_classified(const keel_wsc_msg_t *m, int rc, const uint8_t *p, size_t len) {
  bool whole;
  cJSON *j = plain_parse(p, len, &whole);
  bool object = j && cJSON_IsObject(j) && depth_of(j) <= FEED_MAX_DEPTH;
  if (rc != 0 && rc != -EPROTO)
    fz_fail("classify returned %d", rc);
  if ((rc != 0 || m->kind != KEEL_WSC_UNKNOWN) && !object)
    fz_fail("a message that is no JSON object within the depth limit is kind %d (%d)", m->kind, rc);
  if (object && (whole || m->kind != KEEL_WSC_UNKNOWN)) {
    if ((rc == -EPROTO) != breaks_protocol(j))
      fz_fail("classify returned %d, the message %s the protocol", rc,
              breaks_protocol(j) ? "breaks" : "keeps");
    if (rc == 0)
      check_kind(m, j);
  }
  cJSON_Delete(j);
}

static void client_reads(const uint8_t *p, size_t n) {
  feed_reader_t reader = {0};
  for (size_t at = 0; at <= n;) {
    const uint8_t *cut = memchr(p + at, 0xff, n - at);
    size_t len = cut ? (size_t)(cut - (p + at)) : n - at;
    keel_wsc_msg_t m = {0};
    int rc = classify(&reader, p + at, len, &m);
    check_classified(&m, rc, p + at, len);
    if (!cut)
      break;
    at += len + 1;
  }
  feed_reader_free(&reader);
}

/* ---- Mode 1: the server reads a client's message and answers it --------------------- */

/* The answer ws-feed-server gives (but to "sleep": it answers later, as
 * "echo" does at once), and the kind the client must read it as. */
static char *server_answer(const feed_request_t *r, bool authed, bool token_ok,
                           keel_wsc_kind_t *want) {
  static const char *const topics[] = {"a", "b", "c"};
  bool known = false;
  for (size_t i = 0; r->topic && i < 3; i++)
    known |= strcmp(r->topic, topics[i]) == 0;
  const char *op = r->op == FEED_OP_SUB ? "sub" : "unsub", *error = NULL;
  uint64_t id;
  *want = plain_whole(r->id, &id) ? KEEL_WSC_RESPONSE : KEEL_WSC_SYSTEM;
  switch (r->op) {
  case FEED_OP_AUTH:
    *want = r->token && token_ok ? KEEL_WSC_AUTH_OK : KEEL_WSC_AUTH_FAILED;
    return feed_auth_answer(r->token && token_ok, 7);
  case FEED_OP_SUB:
  case FEED_OP_UNSUB:
    if (!authed)
      error = "not authenticated";
    else if (!known)
      error = "unknown topic";
    else if (r->from_given && !r->from_ok)
      error = "from: an update number";
    *want = error ? KEEL_WSC_CONTROL : KEEL_WSC_IGNORE;
    return feed_topic_answer(op, r->topic, error);
  case FEED_OP_REQ:
    if (!authed || !r->method || strcmp(r->method, "echo") != 0)
      return feed_answer(r->id, NULL, authed ? "unknown method" : "not authenticated");
    return feed_answer(r->id, r->params, NULL);
  case FEED_OP_OTHER:
    return feed_answer(r->id, NULL, "unknown op");
  }
  abort();
}

/* Whether a and b are the same JSON: printed the same (cJSON_Compare
 * holds no infinity equal to itself; both print as null). */
static bool same_json(const cJSON *a, const cJSON *b) {
  if (!a || !b)
    return a == b;
  char *pa = cJSON_PrintUnformatted(a), *pb = cJSON_PrintUnformatted(b);
  bool same = pa && pb && strcmp(pa, pb) == 0;
  cJSON_free(pa);
  cJSON_free(pb);
  return same;
}

static void check_request(const feed_request_t *r, const cJSON *j) {
  const cJSON *op = member(j, "op"), *from = member(j, "from");
  feed_op_t want = string_is(op, "auth")    ? FEED_OP_AUTH
                   : string_is(op, "sub")   ? FEED_OP_SUB
                   : string_is(op, "unsub") ? FEED_OP_UNSUB
                   : string_is(op, "req")   ? FEED_OP_REQ
                                            : FEED_OP_OTHER;
  if (r->op != want)
    fz_fail("op read as %d, not %d", r->op, want);
  if (r->id != member(r->msg, "id") || !same_json(r->id, member(j, "id")))
    fz_fail("the id is not the message's id");
  if ((want == FEED_OP_AUTH && !(r->token ? string_is(member(j, "token"), r->token)
                                          : !cJSON_IsString(member(j, "token")))) ||
      ((want == FEED_OP_SUB || want == FEED_OP_UNSUB) &&
       !(r->topic ? string_is(member(j, "topic"), r->topic) : !cJSON_IsString(member(j, "topic")))))
    fz_fail("the token or topic is not the message's string");
  bool given = want == FEED_OP_SUB && from && !cJSON_IsNull(from);
  bool ok = given && cJSON_IsNumber(from) && from->valuedouble >= 0 && from->valuedouble < 1e18;
  if (r->from_given != given || r->from_ok != ok ||
      (ok && (uint64_t)from->valuedouble != r->from) || (!ok && r->from != 0))
    fz_fail("from %llu is not the message's", (unsigned long long)r->from);
}

/* The client reads the answer the server gave. */
static void check_answer(const char *answer, keel_wsc_kind_t want, const cJSON *request_id) {
  feed_reader_t reader = {0};
  keel_wsc_msg_t m = {0};
  int rc = classify(&reader, answer, strlen(answer), &m);
  uint64_t id;
  bool whole_id = plain_whole(request_id, &id);
  if (rc != 0 && !(want == KEEL_WSC_SYSTEM && cJSON_IsNumber(request_id)))
    fz_fail("the client broke off on the answer %s", answer);
  if (rc == 0 && m.kind != want)
    fz_fail("the answer %s read as kind %d, not %d", answer, m.kind, want);
  if (rc == 0 && whole_id && m.kind == KEEL_WSC_RESPONSE && m.id != id)
    fz_fail("the answer %s is for id %llu", answer, (unsigned long long)m.id);
  feed_reader_free(&reader);
}

static void server_reads(uint8_t ctrl, const uint8_t *p, size_t n) {
  bool authed = ctrl & 4, token_ok = ctrl & 8, whole;
  feed_request_t r;
  int rc = request_parse(p, n, &r);
  cJSON *j = plain_parse(p, n, &whole);
  bool json = j && depth_of(j) <= FEED_MAX_DEPTH;
  if (rc != 0 && rc != -EPROTO)
    fz_fail("a request read with %d", rc);
  if ((rc == 0 && !json) || (rc != 0 && json && whole))
    fz_fail("a request read with %d; JSON within the depth limit: %d", rc, json);
  if (rc == 0) {
    check_request(&r, j);
    keel_wsc_kind_t want;
    char *answer = server_answer(&r, authed, token_ok, &want);
    if (!answer)
      fz_fail("no answer");
    check_answer(answer, want, r.id);
    cJSON_free(answer);
    feed_request_free(&r);
  }
  cJSON_Delete(j);
}

/* ---- Mode 2: the client writes, the server reads ---------------------------------- */

/* The next piece of p (up to a 0xff byte or the end) as a string, cut at
 * its first NUL: malloc'd. */
static char *next_string(const uint8_t **p, const uint8_t *end) {
  const uint8_t *cut = memchr(*p, 0xff, (size_t)(end - *p));
  size_t len = cut ? (size_t)(cut - *p) : (size_t)(end - *p);
  char *s = strndup((const char *)*p, len);
  if (!s)
    abort();
  *p = cut ? cut + 1 : end;
  return s;
}

/* The server reads text back as op with string value s in field. */
static feed_request_t read_back(const char *text, feed_op_t op, const char *field, const char *s) {
  if (!text)
    fz_fail("no text for op %d", op);
  feed_request_t r;
  if (request_parse(text, strlen(text), &r) != 0 || r.op != op)
    fz_fail("the server cannot read %s back", text);
  const char *got = op == FEED_OP_AUTH ? r.token : r.topic;
  if (!got || strcmp(got, s) != 0)
    fz_fail("%s read back as %s \"%s\"", text, field, got ? got : "(none)");
  return r;
}

static void client_writes(const uint8_t *p, size_t n) {
  const uint8_t *end = p + n;
  char *token = next_string(&p, end), *topic = next_string(&p, end);
  uint64_t from = 0;
  for (int i = 0; i < 8 && p < end; i++)
    from = from << 8 | *p++;
  char *text = feed_auth(token);
  feed_request_t r = read_back(text, FEED_OP_AUTH, "token", token);
  feed_request_free(&r);
  cJSON_free(text);
  r = read_back(text = feed_sub(topic, &from), FEED_OP_SUB, "topic", topic);
  /* from goes as a double: rounded past FEED_MAX_NUMBER. */
  if (!r.from_given || r.from_ok != ((double)from < 1e18) ||
      (from <= (uint64_t)FEED_MAX_NUMBER && r.from != from))
    fz_fail("from %llu read back as %llu", (unsigned long long)from, (unsigned long long)r.from);
  feed_request_free(&r);
  cJSON_free(text);
  r = read_back(text = feed_sub(topic, NULL), FEED_OP_SUB, "topic", topic);
  if (r.from_given)
    fz_fail("a sub without from read back with one");
  feed_request_free(&r);
  cJSON_free(text);
  r = read_back(text = feed_unsub(topic), FEED_OP_UNSUB, "topic", topic);
  feed_request_free(&r);
  cJSON_free(text);
  /* An update of the topic, read by the client. */
  char update[256];
  if (feed_update(topic, from, 1, update, sizeof update)) {
    feed_reader_t reader = {0};
    keel_wsc_msg_t m = {0};
    int rc = classify(&reader, update, strlen(update), &m);
    bool exact = from <= (uint64_t)FEED_MAX_NUMBER;
    if ((exact && rc != 0) ||
        (rc == 0 && (m.kind != KEEL_WSC_UPDATE || strcmp(m.topic, topic) != 0 || !m.has_seq ||
                     (exact && m.seq != from))))
      fz_fail("the update %s read back as kind %d (%d)", update, m.kind, rc);
    feed_reader_free(&reader);
  }
  free(token);
  free(topic);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  switch (data[0] % 3) {
  case 0:
    client_reads(data + 1, size - 1);
    break;
  case 1:
    server_reads(data[0], data + 1, size - 1);
    break;
  default:
    client_writes(data + 1, size - 1);
    break;
  }
  return 0;
}
