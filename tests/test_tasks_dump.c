/* The task dump (keel_tasks_write, keel_http_tasks_handler, SIGUSR1 with
 * dump_on_sigusr1): tasks blocked in a TCP recv (with the descriptor and
 * the peer's address on io_uring and epoll), a sleep, a channel, a mutex,
 * a join and a blocking-pool call are each named with what they wait on,
 * in text and in JSON (which python3's json module parses, names with
 * quotes, control bytes and bytes that are not UTF-8 included), with
 * their scope paths and deadlines; in lab mode the ages and relative
 * times are exact; /debug/tasks during a stuck request shows the request's
 * handler waiting on its backend call; SIGUSR1 logs the dump with the
 * flag and is left alone without it. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "http-test.h"

/* ---- Dumps in memory ---------------------------------------------------------- */

typedef struct dump {
  char *data;
  size_t len, cap;
} dump_t;

static int grab(void *arg, const char *data, size_t len) {
  dump_t *d = arg;
  if (d->len + len + 1 > d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 8192;
    while (cap < d->len + len + 1)
      cap *= 2;
    char *p = realloc(d->data, cap);
    if (!p)
      return -ENOMEM;
    d->data = p;
    d->cap = cap;
  }
  memcpy(d->data + d->len, data, len);
  d->len += len;
  d->data[d->len] = '\0';
  return 0;
}

static int take(dump_t *d, unsigned flags) {
  d->len = 0;
  return keel_tasks_write(flags, grab, d);
}

/* The line of text that contains key, copied into line (empty if none). */
static const char *line_with(const char *text, const char *key, char *line, size_t cap) {
  line[0] = '\0';
  const char *hit = text ? strstr(text, key) : NULL;
  if (!hit)
    return line;
  const char *start = hit;
  while (start > text && start[-1] != '\n')
    start--;
  size_t n = strcspn(start, "\n");
  snprintf(line, cap, "%.*s", (int)n, start);
  return line;
}

/* Checks that the line holding key holds each of the NULL-terminated
 * needles; prints the dump when not. */
static int line_has(const char *text, const char *key, ...) {
  char line[2048];
  line_with(text, key, line, sizeof line);
  if (!line[0]) {
    fprintf(stderr, "no line with %s in:\n%s\n", key, text);
    return -1;
  }
  va_list ap;
  va_start(ap, key);
  for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;) {
    if (!strstr(line, needle)) {
      fprintf(stderr, "the line with %s lacks \"%s\": %s\n", key, needle, line);
      va_end(ap);
      return -1;
    }
  }
  va_end(ap);
  return 0;
}

/* JSON documents kept for python3, which runs after keel_run returns. */
#define MAX_DOCS 64
static char *json_docs[MAX_DOCS];
static int njson_docs;

static void keep_json(const char *doc) {
  if (njson_docs < MAX_DOCS)
    json_docs[njson_docs++] = strdup(doc);
}

/* Parses each kept document with python3's json module (strict: control
 * characters in strings are errors) and checks its shape; expect names a
 * task every document has ("" for none). The weird name must come back as
 * it was, its byte that is not UTF-8 as U+FFFD. */
static const char json_check_py[] =
    "import json, sys\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    d = json.loads(f.read().decode('utf-8'))\n"
    "assert isinstance(d['workers'], int) and d['workers'] >= 1, d\n"
    "assert isinstance(d['now_ns'], int), d\n"
    "paths = [s['path'] for s in d['scopes']]\n"
    "assert paths[0] == 'root', paths\n"
    "for s in d['scopes']:\n"
    "    assert isinstance(s['live'], int) and isinstance(s['shield'], bool), s\n"
    "for t in d['tasks']:\n"
    "    assert isinstance(t['name'], str) and isinstance(t['worker'], int), t\n"
    "    assert t['scope'] in paths, (t, paths)\n"
    "    assert t['state'] in ('new', 'ready', 'running', 'blocked', 'parked'), t\n"
    "    if t['state'] in ('blocked', 'parked'):\n"
    "        assert t['age_ns'] >= 0 and isinstance(t['wait']['kind'], str), t\n"
    "names = [t['name'] for t in d['tasks']]\n"
    "want = sys.argv[2]\n"
    "if want == 'weird':\n"
    "    assert 'we\"ird\\\\\\nme\\ufffd' in names, names\n"
    "elif want:\n"
    "    assert want in names, (want, names)\n";

static void check_json_docs(const char *expect) {
  const char *python = "/usr/bin/python3";
  if (access(python, X_OK) != 0) {
    fprintf(stderr, "# no %s here: the JSON documents were not parsed\n", python);
    return;
  }
  char script[] = "/tmp/kt-dump-py-XXXXXX", doc[] = "/tmp/kt-dump-json-XXXXXX";
  int sfd = mkstemp(script);
  assert_true(sfd >= 0);
  assert_int_equal(write(sfd, json_check_py, strlen(json_check_py)),
                   (ssize_t)strlen(json_check_py));
  close(sfd);
  for (int i = 0; i < njson_docs; i++) {
    int dfd = mkstemp(doc);
    assert_true(dfd >= 0);
    size_t len = strlen(json_docs[i]);
    assert_int_equal(write(dfd, json_docs[i], len), (ssize_t)len);
    close(dfd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s %s %s '%s'", python, script, doc, expect);
    int status = system(cmd);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("python3 rejected the dump (status %d):\n%s", status, json_docs[i]);
    unlink(doc);
    strcpy(doc, "/tmp/kt-dump-json-XXXXXX");
    free(json_docs[i]);
  }
  njson_docs = 0;
  unlink(script);
}

/* ---- Tasks blocked in each kind of wait -------------------------------------------- */

static const char weird_name[] = "we\"ird\\\nme\xff";

typedef struct probe {
  keel_tcp_t *server_side; /* read by the reader, on the worker that accepted it */
  keel_chan_t *chan;
  keel_mutex_t mutex;
  atomic_bool release_blocking;
  bool real;
} probe_t;

static int reader_task(void *arg) {
  probe_t *p = arg;
  char b;
  return keel_read(keel_tcp_stream(p->server_side), &b, 1) == -ECANCELED ? 0 : -EPROTO;
}

static int sleeper_task(void *arg) {
  (void)arg;
  return keel_sleep_ms(3600 * 1000) == -ECANCELED ? 0 : -EPROTO;
}

static int chan_task(void *arg) {
  probe_t *p = arg;
  int item;
  return keel_chan_recv(p->chan, &item) == -ECANCELED ? 0 : -EPROTO;
}

static int locker_task(void *arg) {
  probe_t *p = arg;
  return keel_mutex_lock(&p->mutex) == -ECANCELED ? 0 : -EPROTO;
}

static int joiner_task(void *arg) {
  (void)arg;
  keel_scope_t *inner;
  keel_scope_opts_t o = {.name = "inner"};
  int rc = keel_scope_open(&o, &inner);
  if (rc < 0)
    return rc;
  keel_spawn_opts_t so = {.name = "inner-sleeper"};
  rc = keel_spawn(inner, sleeper_task, NULL, &so);
  int join = keel_scope_close(inner); /* 0: the sleeper took its cancellation as success */
  return rc < 0 ? rc : join == 0 || join == -ECANCELED ? 0 : -EPROTO;
}

static void wait_for_release(void *data) {
  probe_t *p = *(probe_t **)data;
  while (!atomic_load(&p->release_blocking))
    usleep(1000);
}

static int blocker_task(void *arg) {
  probe_t *p = arg;
  int rc = keel_blocking_run(wait_for_release, &p, sizeof p, NULL);
  return rc == -ECANCELED || rc == 0 ? 0 : -EPROTO; /* released just before the cancel */
}

/* The names of the tasks the case waits for: blocked, each. */
static const char *const probe_names[] = {"reader", "sleeper",       "chan-reader", "locker",
                                          "joiner", "inner-sleeper", weird_name,    "blocker"};

static bool all_blocked(const dump_t *d, size_t n) {
  char key[96], line[2048];
  for (size_t i = 0; i < n; i++) {
    if (probe_names[i] == weird_name)
      snprintf(key, sizeof key, "we\\\"ird");
    else
      snprintf(key, sizeof key, "{\"name\":\"%s\"", probe_names[i]);
    line_with(d->data, key, line, sizeof line);
    if (!strstr(line, "\"state\":\"blocked\""))
      return false;
  }
  return true;
}

static int spawn_named(keel_scope_t *s, keel_task_fn fn, void *arg, const char *name, int worker) {
  keel_spawn_opts_t so = {.name = name, .on_worker = worker};
  return keel_spawn(s, fn, arg, &so);
}

/* Spawns one task per kind of wait into s. The reader, which reads a
 * connection, stays on this worker (it owns the connection); the locker
 * goes to the other worker when there is one, so that the dump reads a
 * task another thread runs. */
static int spawn_probes(probe_t *p, keel_scope_t *s) {
  int other = keel_worker_count() > 1 ? KEEL_WORKER(1) : KEEL_WORKER_CURRENT;
  CHECK_RC(spawn_named(s, reader_task, p, "reader", KEEL_WORKER_CURRENT));
  CHECK_RC(spawn_named(s, sleeper_task, p, "sleeper", KEEL_WORKER_CURRENT));
  CHECK_RC(spawn_named(s, chan_task, p, "chan-reader", KEEL_WORKER_CURRENT));
  CHECK_RC(spawn_named(s, locker_task, p, "locker", other));
  CHECK_RC(spawn_named(s, joiner_task, p, "joiner", KEEL_WORKER_CURRENT));
  CHECK_RC(spawn_named(s, sleeper_task, p, weird_name, KEEL_WORKER_CURRENT));
  if (p->real) /* the blocking pool's threads do not wait for lab mode's clock */
    CHECK_RC(spawn_named(s, blocker_task, p, "blocker", KEEL_WORKER_CURRENT));
  return 0;
}

/* A connection whose far end never writes: client, and the accepted side
 * for the reader. The reader's peer is the client's local address. */
static int connect_pair(probe_t *p, keel_listener_t **l, keel_tcp_t **client, char *peer,
                        size_t cap) {
  CHECK_RC(keel_tcp_listen("127.0.0.1:0", NULL, l));
  keel_addr_t a;
  char hostport[KEEL_ADDRSTRLEN];
  CHECK_RC(keel_listener_addr(*l, &a));
  keel_addr_format(&a, hostport, sizeof hostport);
  CHECK_RC(keel_tcp_connect(hostport, client));
  CHECK_RC(keel_tcp_accept(*l, &p->server_side));
  CHECK_RC(keel_tcp_local_addr(*client, &a));
  keel_addr_format(&a, peer, cap);
  return 0;
}

static int check_text(const dump_t *d, probe_t *p, const char *peer) {
  char want_peer[KEEL_ADDRSTRLEN + 8];
  snprintf(want_peer, sizeof want_peer, "peer=%s", peer);
  CHECK(line_has(d->data, "task 'reader'", "blocked", p->real ? "recv fd=" : "recv @0x",
                 p->real ? want_peer : "recv", NULL) == 0);
  CHECK(line_has(d->data, "task 'sleeper'", "blocked", ": sleep until +", ", deadline +", NULL) ==
        0);
  CHECK(line_has(d->data, "task 'chan-reader'", ": chan recv @0x", NULL) == 0);
  CHECK(line_has(d->data, "task 'locker'", ": mutex @0x", NULL) == 0);
  CHECK(line_has(d->data, "task 'joiner'", ": join root/guard/probe/inner", NULL) == 0);
  CHECK(line_has(d->data, "task 'inner-sleeper'", ": sleep until", NULL) == 0);
  CHECK(line_has(d->data, "task 'we\"ird\\\\\\x0ame\\xff'", ": sleep", NULL) == 0);
  if (p->real)
    CHECK(line_has(d->data, "task 'blocker'", ": blocking call fn=0x", NULL) == 0);
  CHECK(line_has(d->data, "scope root/guard/probe:", "live, deadline +", NULL) == 0);
  CHECK(line_has(d->data, "scope root/guard/probe/inner:", "1 live", NULL) == 0);
  return 0;
}

static int check_json(const dump_t *d, probe_t *p, const char *peer) {
  char want_peer[KEEL_ADDRSTRLEN + 16];
  snprintf(want_peer, sizeof want_peer, "\"peer\":\"%s\"", peer);
  CHECK(line_has(d->data, "{\"name\":\"reader\"", "\"scope\":\"root/guard/probe\"",
                 "\"kind\":\"recv\"", p->real ? "\"fd\":" : "\"object\":\"0x",
                 p->real ? want_peer : "\"deadline_in_ns\":", NULL) == 0);
  CHECK(line_has(d->data, "{\"name\":\"sleeper\"", "\"kind\":\"sleep\"",
                 "\"until_in_ns\":", "\"deadline_in_ns\":", NULL) == 0);
  CHECK(line_has(d->data, "{\"name\":\"chan-reader\"", "\"kind\":\"chan_recv\"", NULL) == 0);
  CHECK(line_has(d->data, "{\"name\":\"locker\"", "\"kind\":\"mutex\"", NULL) == 0);
  CHECK(line_has(d->data, "{\"name\":\"joiner\"", "\"kind\":\"join\"",
                 "\"scope\":\"root/guard/probe/inner\"}", NULL) == 0);
  CHECK(line_has(d->data, "{\"name\":\"inner-sleeper\"", "\"scope\":\"root/guard/probe/inner\"",
                 NULL) == 0);
  CHECK(line_has(d->data, "we\\\"ird\\\\\\u000ame\\ufffd", "\"kind\":\"sleep\"", NULL) == 0);
  if (p->real)
    CHECK(line_has(d->data, "{\"name\":\"blocker\"", "\"kind\":\"blocking\"", "\"fn\":\"0x",
                   NULL) == 0);
  CHECK(line_has(d->data, "{\"path\":\"root/guard/probe\"", "\"deadline_in_ns\":", NULL) == 0);
  return 0;
}

static int stop_probes(probe_t *p, keel_scope_t *s) {
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  atomic_store(&p->release_blocking, true);
  CHECK_EQ(keel_scope_close(s), 0); /* each task saw -ECANCELED, as it expected */
  keel_mutex_unlock(&p->mutex);
  return 0;
}

static int kinds_case(void *arg) {
  (void)arg;
  probe_t p = {.real = !keel_lab_active()};
  keel_listener_t *l;
  keel_tcp_t *client;
  char peer[KEEL_ADDRSTRLEN];
  CHECK_RC(connect_pair(&p, &l, &client, peer, sizeof peer));
  keel_chan_opts_t co = {.elem_size = sizeof(int), .capacity = 1};
  CHECK_RC(keel_chan_open(&co, &p.chan));
  keel_mutex_init(&p.mutex);
  CHECK_RC(keel_mutex_lock(&p.mutex));
  keel_scope_t *s;
  keel_scope_opts_t so = {.name = "probe", .deadline_ns = keel_now_ns() + 20 * KEEL_NS_PER_SEC};
  CHECK_RC(keel_scope_open(&so, &s));
  CHECK_RC(spawn_probes(&p, s));
  size_t n = sizeof probe_names / sizeof probe_names[0] - !p.real;
  dump_t d = {0};
  for (int i = 0; i < 5000; i++) {
    CHECK_RC(take(&d, KEEL_TASKS_JSON));
    if (all_blocked(&d, n))
      break;
    CHECK_RC(keel_sleep_ms(1));
  }
  CHECK(all_blocked(&d, n));
  CHECK_EQ(check_json(&d, &p, peer), 0);
  keep_json(d.data);
  CHECK_RC(take(&d, 0));
  if (keel_lab_seed() <= 1) /* real backends, and lab mode's first seed */
    fprintf(stderr, "# %s:\n%s", keel_backend_name(), d.data);
  CHECK_EQ(check_text(&d, &p, peer), 0);
  free(d.data);
  CHECK_EQ(stop_probes(&p, s), 0);
  keel_chan_close(p.chan);
  keel_mutex_destroy(&p.mutex);
  keel_tcp_close(p.server_side);
  keel_tcp_close(client);
  keel_listener_close(l);
  return 0;
}

/* Runs fn on the real backends selected with `workers` workers, and in lab
 * mode with seeds 1..seeds if it is selected. */
static void run_real_and_lab(keel_task_fn fn, int workers, uint64_t seeds) {
  bool real = kt_backend_selected(KEEL_BACKEND_URING) || kt_backend_selected(KEEL_BACKEND_EPOLL);
  bool lab = kt_backend_selected(KEEL_BACKEND_LAB);
  if (real)
    kt_run_where(KT_ON_REAL, fn, NULL, workers, 1, 0);
  if (lab)
    kt_run_where(KT_ON_LAB, fn, NULL, 1, 1, seeds);
  if (!real && !lab)
    skip();
}

static void test_kinds(void **state) {
  (void)state;
  run_real_and_lab(kinds_case, 2, 4); /* 2 workers: the dump reads the other's tasks */
  check_json_docs("weird");
}

/* ---- Lab mode: exact times ----------------------------------------------------------- */

static int64_t lab_t0;

static int lab_sleeper(void *arg) {
  (void)arg;
  return keel_sleep_until(lab_t0 + 10 * KEEL_NS_PER_SEC) == -ECANCELED ? 0 : -EPROTO;
}

static int lab_times_case(void *arg) {
  (void)arg;
  lab_t0 = keel_now_ns();
  keel_scope_t *s;
  keel_scope_opts_t so = {.name = "timed", .deadline_ns = lab_t0 + 5 * KEEL_NS_PER_SEC};
  CHECK_RC(keel_scope_open(&so, &s));
  keel_spawn_opts_t sp = {.name = "sleeper"};
  CHECK_RC(keel_spawn(s, lab_sleeper, NULL, &sp));
  CHECK_RC(keel_sleep_ms(1500));
  dump_t d = {0};
  CHECK_RC(take(&d, 0));
  CHECK(line_has(d.data, "task 'sleeper'", "blocked 1.500s: sleep until +8.500s, deadline +3.500s",
                 NULL) == 0);
  CHECK(line_has(d.data, "scope root/guard/timed:", "1 live, deadline +3.500s", NULL) == 0);
  CHECK_RC(take(&d, KEEL_TASKS_JSON));
  CHECK(line_has(d.data, "{\"name\":\"sleeper\"", "\"age_ns\":1500000000,",
                 "\"until_in_ns\":8500000000}", "\"deadline_in_ns\":3500000000", NULL) == 0);
  keep_json(d.data);
  CHECK_RC(keel_sleep_ms(1000)); /* since stays, the age advances */
  CHECK_RC(take(&d, 0));
  CHECK(line_has(d.data, "task 'sleeper'", "blocked 2.500s: sleep until +7.500s, deadline +2.500s",
                 NULL) == 0);
  CHECK_RC(take(&d, KEEL_TASKS_JSON));
  CHECK(line_has(d.data, "{\"name\":\"sleeper\"", "\"age_ns\":2500000000,", NULL) == 0);
  free(d.data);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  CHECK_RC(keel_scope_close(s));
  return 0;
}

static void test_lab_times(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 4; seed++)
    kt_run_lab_body(lab_times_case, NULL, seed);
  check_json_docs("sleeper");
}

/* ---- Cancellation in the dump, and the API's edges ---------------------------------------- */

static int failing_sink(void *arg, const char *data, size_t len) {
  (void)arg, (void)data, (void)len;
  return -EPIPE;
}

static int api_case(void *arg) {
  (void)arg;
  CHECK_EQ(keel_tasks_write(0, failing_sink, NULL), -EPIPE);
  CHECK_EQ(keel_tasks_write(4, failing_sink, NULL), -EINVAL);
  CHECK_EQ(keel_tasks_write(0, NULL, NULL), -EINVAL);
  keel_scope_t *s;
  keel_scope_opts_t so = {.name = "doomed"};
  CHECK_RC(keel_scope_open(&so, &s));
  keel_spawn_opts_t sp = {.name = "sleeper"};
  CHECK_RC(keel_spawn(s, sleeper_task, NULL, &sp));
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  dump_t d = {0};
  CHECK_RC(take(&d, 0));
  CHECK(line_has(d.data, "scope root/guard/doomed:", "1 live, cancelled (user)", NULL) == 0);
  CHECK(line_has(d.data, "task 'main'", "blocked", ": join root/guard", NULL) == 0);
  CHECK(line_has(d.data, "task 'task'", "running", NULL) == 0);
  CHECK_RC(take(&d, KEEL_TASKS_JSON));
  CHECK(line_has(d.data, "{\"path\":\"root/guard/doomed\"", "\"cancelled\":\"user\"", NULL) == 0);
  CHECK(line_has(d.data, "{\"name\":\"task\"", "\"state\":\"running\"}", NULL) == 0);
  keep_json(d.data);
  free(d.data);
  CHECK_RC(keel_scope_close(s));
  return 0;
}

static void test_api(void **state) {
  (void)state;
  dump_t d = {0};
  assert_int_equal(keel_tasks_write(0, grab, &d), -EINVAL); /* outside a runtime */
  assert_null(d.data);
  kt_run_body(api_case, NULL, 1);
  check_json_docs("");
}

/* ---- /debug/tasks during a stuck request ------------------------------------------------- */

typedef struct backend {
  keel_listener_t *listener;
  char addr[KEEL_ADDRSTRLEN];
  keel_notify_t release;
} backend_t;

static backend_t backend;

/* Accepts the handler's connection, reads its request, answers nothing
 * until released, then closes. */
static int backend_task(void *arg) {
  (void)arg;
  keel_tcp_t *c;
  CHECK_RC(keel_tcp_accept(backend.listener, &c));
  char buf[4];
  CHECK_RC(keel_read_exact(keel_tcp_stream(c), buf, sizeof buf, NULL));
  CHECK_RC(keel_notify_wait(&backend.release));
  keel_tcp_close(c);
  return 0;
}

/* The handler of the stuck request: its backend call never answers. */
static int stuck(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)ctx;
  keel_tcp_t *c;
  int rc = keel_tcp_connect(backend.addr, &c);
  if (rc < 0)
    return rc;
  keel_stream_t *s = keel_tcp_stream(c);
  char b;
  ssize_t n = keel_write_all(s, "ping", 4, NULL);
  if (n >= 0)
    n = keel_read(s, &b, 1); /* here, until the backend closes */
  keel_tcp_close(c);
  return n < 0 ? (int)n : keel_http_send(res, "backend closed", 14);
}

static keel_http_router_t *router;

static void routes(void) {
  if (router)
    return;
  assert_int_equal(keel_http_router_open(&router), 0);
  assert_int_equal(keel_http_route(router, "GET", "/debug/tasks", 0, keel_http_tasks_handler, NULL),
                   0);
  assert_int_equal(keel_http_route(router, "GET", "/stuck", 0, stuck, NULL), 0);
}

/* GETs url with the given Accept field (NULL: none) into d. */
static int fetch(const char *url, const char *accept, dump_t *d, char *type, size_t type_cap) {
  keel_http_header_t h = {"Accept", 6, accept, accept ? strlen(accept) : 0};
  keel_http_call_opts_t req = {.url = url, .headers = accept ? &h : NULL, .nheaders = !!accept};
  keel_http_call_t *call;
  CHECK_RC(keel_http_fetch(NULL, &req, &call));
  CHECK_EQ(keel_http_call_status(call), 200);
  const void *body;
  size_t len;
  CHECK_RC(keel_http_call_body(call, &body, &len));
  d->len = 0;
  CHECK_RC(grab(d, body, len));
  const char *ct = keel_http_call_header(call, "Content-Type");
  snprintf(type, type_cap, "%s", ct ? ct : "");
  keel_http_call_close(call);
  return 0;
}

/* Fetches /debug/tasks until the stuck request's handler shows up blocked
 * in its backend read. */
static int await_stuck(const char *base, dump_t *d, char *type, size_t cap) {
  char url[128];
  snprintf(url, sizeof url, "http://%s/debug/tasks", base);
  char line[2048];
  for (int i = 0; i < 5000; i++) {
    CHECK_RC(fetch(url, NULL, d, type, cap));
    line_with(d->data, "task 'http-handler'", line, sizeof line);
    if (strstr(line, "blocked") && strstr(line, ": recv"))
      return 0;
    CHECK_RC(keel_sleep_ms(1));
  }
  KT_FAIL("the stuck handler never showed up blocked in a recv:\n%s", d->data);
}

static int check_stuck_json(const char *base, const char *want_peer, dump_t *d) {
  char url[128], type[128];
  snprintf(url, sizeof url, "http://%s/debug/tasks?format=json", base);
  CHECK_RC(fetch(url, NULL, d, type, sizeof type));
  CHECK(strcmp(type, "application/json") == 0);
  CHECK(line_has(d->data, "{\"name\":\"http-handler\"", "\"kind\":\"recv\"",
                 want_peer ? want_peer : "\"state\":\"blocked\"", NULL) == 0);
  CHECK(line_has(d->data, "{\"name\":\"http-conn\"",
                 "\"activity\":\"http: waiting for the handler\"", NULL) == 0);
  keep_json(d->data);
  snprintf(url, sizeof url, "http://%s/debug/tasks", base);
  CHECK_RC(fetch(url, "text/html, application/json;q=0.9", d, type, sizeof type));
  CHECK(strcmp(type, "application/json") == 0);
  CHECK(line_has(d->data, "{\"name\":\"http-handler\"", "\"kind\":\"recv\"", NULL) == 0);
  snprintf(url, sizeof url, "http://%s/debug/tasks?format=text", base);
  CHECK_RC(fetch(url, "application/json", d, type, sizeof type));
  CHECK(strcmp(type, "text/plain; charset=utf-8") == 0);
  return 0;
}

static int http_case(void *arg) {
  (void)arg;
  bool real = !keel_lab_active();
  keel_notify_init(&backend.release);
  CHECK_RC(keel_tcp_listen("127.0.0.1:0", NULL, &backend.listener));
  keel_addr_t a;
  CHECK_RC(keel_listener_addr(backend.listener, &a));
  keel_addr_format(&a, backend.addr, sizeof backend.addr);
  keel_scope_t *bs = kt_spawn_in_scope(backend_task, NULL, KEEL_WORKER_CURRENT);
  CHECK(bs != NULL);
  kt_server_t srv;
  keel_http_server_opts_t opts = {.handler = keel_http_router_handler, .ctx = router};
  CHECK_RC(kt_server_start(&srv, &opts));
  kt_conn_t c1;
  CHECK_RC(kt_connect(&srv, &c1));
  CHECK_RC(kt_send(&c1, "GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n"));
  dump_t d = {0};
  char type[128], peer[KEEL_ADDRSTRLEN + 8], jpeer[KEEL_ADDRSTRLEN + 16];
  CHECK_RC(await_stuck(srv.addr, &d, type, sizeof type));
  if (keel_lab_seed() <= 1)
    fprintf(stderr, "# /debug/tasks on %s:\n%s", keel_backend_name(), d.data);
  CHECK(strcmp(type, "text/plain; charset=utf-8") == 0);
  snprintf(peer, sizeof peer, "peer=%s", backend.addr);
  snprintf(jpeer, sizeof jpeer, "\"peer\":\"%s\"", backend.addr);
  CHECK(line_has(d.data, "task 'http-handler'", real ? "recv fd=" : "recv @0x",
                 real ? peer : "blocked", NULL) == 0);
  CHECK(line_has(d.data, "task 'http-conn'", "(http: waiting for the handler)", NULL) == 0);
  CHECK(line_has(d.data, "/http-request:", "1 live, deadline +", "shield", NULL) == 0);
  CHECK_EQ(check_stuck_json(srv.addr, real ? jpeer : NULL, &d), 0);
  free(d.data);
  keel_notify_one(&backend.release); /* the backend closes: the handler answers */
  kt_resp_t r;
  CHECK_RC(kt_response(&c1, &r, false));
  CHECK_EQ(r.status, 200);
  kt_resp_free(&r);
  kt_disconnect(&c1);
  CHECK_RC(keel_scope_close(bs));
  keel_listener_close(backend.listener);
  keel_notify_destroy(&backend.release);
  return kt_server_stop(&srv);
}

static void test_http(void **state) {
  (void)state;
  routes();
  kt_run_body(http_case, NULL, 1);
  check_json_docs("http-handler");
}

/* ---- SIGUSR1 ---------------------------------------------------------------------------- */

#define CHILD_ALARM_S 30

static keel_backend_t child_backend;
static atomic_bool app_usr1_seen;

static void app_usr1(int sig) {
  (void)sig;
  atomic_store(&app_usr1_seen, true);
}

static bool disposition_is(int sig, void (*handler)(int)) {
  struct sigaction sa;
  return sigaction(sig, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == handler;
}

/* The child's log, which its main task reads back: stderr is a memfd. */
static int log_fd = -1;

static bool log_holds(const char *needle) {
  static char buf[65536]; /* not on a task's stack */
  ssize_t n = pread(log_fd, buf, sizeof buf - 1, 0);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  return strstr(buf, needle) != NULL;
}

static int usr1_dump_main(void *arg) {
  (void)arg;
  if (disposition_is(SIGUSR1, app_usr1) || !disposition_is(SIGTERM, SIG_DFL)) {
    printf("child: SIGUSR1 is not keel's, or SIGTERM is not left alone\n");
    return 2;
  }
  keel_scope_t *s;
  keel_scope_opts_t so = {.name = "usr1"};
  if (keel_scope_open(&so, &s) < 0)
    return 3;
  keel_spawn_opts_t sp = {.name = "dump-me", .on_worker = KEEL_WORKER(1)};
  if (keel_spawn(s, sleeper_task, NULL, &sp) < 0)
    return 4;
  keel_sleep_ms(20);
  kill(getpid(), SIGUSR1);
  int rc = 5;
  for (int i = 0; i < 5000 && rc; i++) {
    if (log_holds("task 'dump-me' [worker 1] blocked"))
      rc = 0;
    else
      keel_sleep_ms(2);
  }
  if (rc)
    printf("child: no dump in the log after SIGUSR1\n");
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_close(s);
  return rc;
}

/* Copies the child's log to the stderr the parent captures. */
static void log_end(int saved_stderr) {
  static char buf[65536];
  ssize_t n = pread(log_fd, buf, sizeof buf, 0);
  dup2(saved_stderr, STDERR_FILENO);
  if (n > 0 && write(STDERR_FILENO, buf, (size_t)n) != n)
    printf("child: the log was not copied\n");
}

static int usr1_dump_child(void) {
  int saved = dup(STDERR_FILENO);
  log_fd = memfd_create("keel-log", 0);
  if (saved < 0 || log_fd < 0 || dup2(log_fd, STDERR_FILENO) < 0)
    return 10;
  signal(SIGUSR1, app_usr1);
  signal(SIGTERM, SIG_DFL);
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = child_backend;
  cfg.workers = 2;
  cfg.dump_on_sigusr1 = true; /* without handle_signals */
  int rc = keel_run(&cfg, usr1_dump_main, NULL);
  log_end(saved);
  if (rc != 0) {
    printf("child: keel_run returned %d\n", rc);
    return 11;
  }
  if (!disposition_is(SIGUSR1, app_usr1)) {
    printf("child: keel_run did not restore SIGUSR1's disposition\n");
    return 12;
  }
  return 0;
}

static void test_sigusr1_dump(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    child_backend = b;
    int status = 0;
    char *err = kt_run_child(usr1_dump_child, CHILD_ALARM_S, &status, NULL);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("[%s] the child exited with status %d", kt_backend_name(b), status);
    if (!strstr(err, "SIGUSR1: task dump") || !strstr(err, "scope root/usr1: 1 live") ||
        !strstr(err, "task 'dump-me' [worker 1] blocked") || !strstr(err, ": sleep until +"))
      fail_msg("[%s] the log lacks the dump: %s", kt_backend_name(b), err);
    free(err);
  }
}

/* Without dump_on_sigusr1, keel leaves SIGUSR1 alone, even while it
 * handles SIGINT/SIGTERM: the application's handler keeps it. */
static int usr1_alone_main(void *arg) {
  (void)arg;
  if (!disposition_is(SIGUSR1, app_usr1)) {
    printf("child: keel took SIGUSR1 without dump_on_sigusr1\n");
    return 2;
  }
  kill(getpid(), SIGUSR1);
  for (int i = 0; i < 5000 && !atomic_load(&app_usr1_seen); i++)
    keel_sleep_ms(1);
  if (!atomic_load(&app_usr1_seen)) {
    printf("child: the application's SIGUSR1 handler never ran\n");
    return 3;
  }
  return 0;
}

static int usr1_alone_child(void) {
  signal(SIGUSR1, app_usr1);
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = child_backend;
  cfg.workers = 2;
  cfg.handle_signals = true;
  int rc = keel_run(&cfg, usr1_alone_main, NULL);
  if (rc != 0) {
    printf("child: keel_run returned %d\n", rc);
    return 11;
  }
  return disposition_is(SIGUSR1, app_usr1) ? 0 : 12;
}

static void test_sigusr1_alone(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    child_backend = b;
    int status = 0;
    char *err = kt_run_child(usr1_alone_child, CHILD_ALARM_S, &status, NULL);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("[%s] the child exited with status %d", kt_backend_name(b), status);
    if (strstr(err, "task dump") || strstr(err, "scope root"))
      fail_msg("[%s] a dump without dump_on_sigusr1: %s", kt_backend_name(b), err);
    free(err);
  }
}

/* keel_dump_tasks logs the text form. */
static int dump_log_main(void *arg) {
  (void)arg;
  keel_dump_tasks();
  return 0;
}

static int dump_log_child(void) {
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = child_backend;
  cfg.workers = 1;
  cfg.main_name = "logger";
  return keel_run(&cfg, dump_log_main, NULL) == 0 ? 0 : 11;
}

static void test_dump_log(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    child_backend = b;
    int status = 0;
    char *err = kt_run_child(dump_log_child, CHILD_ALARM_S, &status, NULL);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("[%s] the child exited with status %d", kt_backend_name(b), status);
    /* A log line each, logged from the task: "<time> info worker=0
     * task=logger msg=\"<the dump's line>\" dump_line=N" (the text format). */
    if (!strstr(err,
                " info worker=0 task=logger msg=\"1 task in 1 scope on 1 worker\" dump_line=0\n") ||
        !strstr(err, " info worker=0 task=logger msg=\"scope root: 1 live\" dump_line=1\n") ||
        !strstr(
            err,
            " info worker=0 task=logger msg=\"  task 'logger' [worker 0] running\" dump_line=2\n"))
      fail_msg("[%s] keel_dump_tasks logged: %s", kt_backend_name(b), err);
    free(err);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kinds),        cmocka_unit_test(test_lab_times),
      cmocka_unit_test(test_api),          cmocka_unit_test(test_http),
      cmocka_unit_test(test_sigusr1_dump), cmocka_unit_test(test_sigusr1_alone),
      cmocka_unit_test(test_dump_log),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  keel_http_router_close(router);
  return kt_exit_status(failed);
}
