/* Lab mode, the third backend: one worker whose clock is virtual and whose
 * ready tasks run in an order drawn from a seeded generator.
 *
 * Time stands still while tasks run. When every task is blocked, the loop
 * asks to sleep until the next timer; lab mode jumps the clock there
 * instead (timer ticks are nanoseconds here, so each deadline is hit
 * exactly). With no timer armed and nothing ready, only another thread (a
 * blocking-pool function, a cross-thread post) can make progress: then the
 * loop really waits for its wake-up, and after a second of that it reports
 * the blocked tasks once, since in a lab test that is almost always a
 * deadlock.
 *
 * Real descriptors are not driven in lab mode (their operations fail with
 * -EOPNOTSUPP): TCP runs on the in-memory network of src/net/labnet.c,
 * whose state is a worker slot of the net layer's own, and keel_lab_pipe
 * streams need no network at all. Everything that differs from the real
 * backends goes through the backend ops: the clock, the choice of the next
 * task, the trace of spawns and yields, and virtual_time. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"
#include "keel/lab.h"

/* Virtual time starts here, not at zero, so that absolute deadlines and
 * "no deadline" (0 in some options) never meet. */
#define LAB_EPOCH_NS (1000 * KEEL_NS_PER_SEC)
/* Real time the loop waits for another thread before reporting. */
#define LAB_STALL_REPORT_MS 1000

#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME UINT64_C(0x100000001b3)

uint64_t keel__lab_seed_from(const keel_config_t *cfg) {
  if (cfg->lab_seed)
    return cfg->lab_seed;
  const char *env = getenv("KEEL_SEED");
  if (env && *env) {
    char *end;
    unsigned long long v = strtoull(env, &end, 0);
    if (*end == '\0' && v != 0)
      return v;
    KEEL_LOG_FIELDS(KEEL_LOG_WARN, "KEEL_SEED is not a non-zero number: seed 1",
                    keel_log_str("KEEL_SEED", env));
  }
  return 1;
}

static uint64_t fnv_mix(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= FNV_PRIME;
  }
  return h;
}

void keel__lab_trace(keel__lab_t *lab, unsigned kind, uint64_t a, uint64_t b) {
  uint64_t h = fnv_mix(lab->trace_hash, kind);
  h = fnv_mix(h, a);
  lab->trace_hash = fnv_mix(h, b);
  lab->trace_events++;
}

static size_t queue_len(const keel__queue_t *q) {
  size_t n = 0;
  for (const keel__queue_t *i = q->next; i != q; i = i->next)
    n++;
  return n;
}

/* Any ready task may go next, cancelled ones included: the real backends
 * run cancelled tasks first, but nothing may rely on that order. */
static keel__queue_t *nth_ready(keel__worker_t *w, size_t n_cancel, size_t pick) {
  keel__queue_t *q = &w->ready_cancel;
  if (pick >= n_cancel) {
    pick -= n_cancel;
    q = &w->ready;
  }
  keel__queue_t *node = q->next;
  while (pick-- > 0)
    node = node->next;
  return node;
}

/* Where node sits among the ready tasks, or SIZE_MAX. */
static size_t ready_index(keel__worker_t *w, const keel__queue_t *node) {
  size_t i = 0;
  const keel__queue_t *queues[2] = {&w->ready_cancel, &w->ready};
  for (int k = 0; k < 2; k++)
    for (const keel__queue_t *n = queues[k]->next; n != queues[k]; n = n->next, i++)
      if (n == node)
        return i;
  return SIZE_MAX;
}

/* keel_yield promises the others a turn: a task that just yielded is not
 * drawn while another is ready, wherever it sits (timers and messages
 * handled since may have queued tasks behind it). */
static keel_task_t *lab_pick_ready(keel__worker_t *w) {
  keel__lab_t *lab = w->backend;
  size_t n_cancel = queue_len(&w->ready_cancel);
  size_t n = n_cancel + queue_len(&w->ready);
  if (n == 0)
    return NULL;
  keel_task_t *yielder = lab->yielder;
  lab->yielder = NULL;
  size_t skip = yielder && n > 1 ? ready_index(w, &yielder->ready_node) : SIZE_MAX;
  size_t choices = skip == SIZE_MAX ? n : n - 1;
  size_t pick = (size_t)(((__uint128_t)keel__rng_next(w->rng) * choices) >> 64);
  if (pick >= skip)
    pick++;
  keel__queue_t *node = nth_ready(w, n_cancel, pick);
  keel__queue_remove(node);
  keel_task_t *t = keel__container_of(node, keel_task_t, ready_node);
  keel__lab_trace(lab, KEEL__LAB_EV_RUN, t->lab_id, (uint64_t)lab->now_ns);
  return t;
}

/* ---- Backend ops ------------------------------------------------------------ */

static int lab_init(keel__worker_t *w) {
  keel__lab_t *lab = calloc(1, sizeof *lab);
  if (!lab)
    return -ENOMEM;
  lab->now_ns = LAB_EPOCH_NS;
  lab->seed = w->rt->lab_seed;
  lab->trace_hash = fnv_mix(FNV_OFFSET, lab->seed);
  keel__rng_seed(w->rng, lab->seed);
  w->backend = lab;
  KEEL_LOG_FIELDS(KEEL_LOG_DEBUG, "lab mode", keel_log_uint("seed", lab->seed));
  return 0;
}

static void lab_destroy(keel__worker_t *w) {
  keel__lab_t *lab = w->backend;
  if (!lab)
    return;
  if (w->rt->cfg.lab_trace)
    *w->rt->cfg.lab_trace = lab->trace_hash;
  free(lab);
  w->backend = NULL;
}

static void lab_wake(keel__worker_t *w) {
  uint64_t one = 1;
  ssize_t rc = write(w->wake_fd, &one, sizeof one);
  (void)rc;
}

static void drain_wake_fd(keel__worker_t *w) {
  uint64_t n;
  ssize_t rc = read(w->wake_fd, &n, sizeof n);
  (void)rc;
}

/* Nothing ready, no timer: wait for another thread's post. */
static void lab_stall(keel__worker_t *w) {
  keel__lab_t *lab = w->backend;
  struct pollfd pfd = {w->wake_fd, POLLIN, 0};
  int timeout = lab->deadlock_reported ? -1 : LAB_STALL_REPORT_MS;
  int n = poll(&pfd, 1, timeout);
  if (n == 0 && !lab->deadlock_reported) {
    lab->deadlock_reported = true;
    KEEL_LOG_FIELDS(KEEL_LOG_WARN,
                    "lab: every task is blocked and no timer is armed; still waiting for another "
                    "thread. Blocked tasks:",
                    keel_log_uint("seed", lab->seed),
                    keel_log_int("waited_ms", LAB_STALL_REPORT_MS));
    keel__tasks_log(w->rt, KEEL_LOG_INFO);
    return;
  }
  drain_wake_fd(w);
}

static void lab_poll(keel__worker_t *w, int64_t timeout_ns) {
  keel__lab_t *lab = w->backend;
  if (timeout_ns < 0) {
    lab_stall(w);
    return;
  }
  if (timeout_ns == 0) {
    drain_wake_fd(w);
    return;
  }
  lab->now_ns += timeout_ns;
  keel__lab_trace(lab, KEEL__LAB_EV_CLOCK, (uint64_t)lab->now_ns, 0);
}

static ssize_t lab_recv(keel__io_t *io, void *buf, size_t len) {
  (void)io, (void)buf, (void)len;
  return -EOPNOTSUPP;
}
static ssize_t lab_readv(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  (void)io, (void)iov, (void)iovcnt;
  return -EOPNOTSUPP;
}
static ssize_t lab_send(keel__io_t *io, const void *buf, size_t len) {
  (void)io, (void)buf, (void)len;
  return -EOPNOTSUPP;
}
static ssize_t lab_writev(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  (void)io, (void)iov, (void)iovcnt;
  return -EOPNOTSUPP;
}
static int lab_accept(keel__io_t *io) {
  (void)io;
  return -EOPNOTSUPP;
}
static int lab_connect(keel__io_t *io, const struct sockaddr *sa, socklen_t len) {
  (void)io, (void)sa, (void)len;
  return -EOPNOTSUPP;
}
static void lab_arm_readable(keel__io_t *io, keel__wait_t *w) {
  (void)io;
  keel__wait_init(w, NULL, KEEL__WAIT_READABLE, io);
  keel__wait_complete(w, -EOPNOTSUPP);
}
static int lab_readable_done(keel__io_t *io, keel__wait_t *w) {
  (void)io;
  return (int)w->result;
}
static void lab_io_close(keel__io_t *io) { (void)io; }

static int64_t lab_clock(keel__worker_t *w) { return ((keel__lab_t *)w->backend)->now_ns; }

static void lab_on_spawn(keel__worker_t *w, keel_task_t *t) {
  keel__lab_t *lab = w->backend;
  t->lab_id = (uint32_t)++lab->next_task_id; /* wraps after 2^32 spawns */
  keel__lab_trace(lab, KEEL__LAB_EV_SPAWN, t->lab_id, 0);
}

/* The seeded pick must still let the others run. */
static void lab_on_yield(keel__worker_t *w, keel_task_t *t) {
  ((keel__lab_t *)w->backend)->yielder = t;
}

const keel__backend_ops_t keel__lab_ops = {
    .name = "lab",
    .init = lab_init,
    .destroy = lab_destroy,
    .poll = lab_poll,
    .wake = lab_wake,
    .recv = lab_recv,
    .readv = lab_readv,
    .send = lab_send,
    .writev = lab_writev,
    .accept = lab_accept,
    .connect = lab_connect,
    .arm_readable = lab_arm_readable,
    .readable_done = lab_readable_done,
    .io_close = lab_io_close,
    .virtual_time = true,
    .clock = lab_clock,
    .pick_ready = lab_pick_ready,
    .on_spawn = lab_on_spawn,
    .on_yield = lab_on_yield,
};

keel__lab_t *keel__lab_of(const keel__worker_t *w) {
  return w && w->ops == &keel__lab_ops ? w->backend : NULL;
}

/* ---- Public API ------------------------------------------------------------- */

static keel__lab_t *lab_current(void) { return keel__lab_of(keel__tls_worker); }

bool keel_lab_active(void) { return lab_current() != NULL; }

uint64_t keel_lab_seed(void) {
  keel__lab_t *lab = lab_current();
  return lab ? lab->seed : 0;
}

uint64_t keel_lab_trace_hash(void) {
  keel__lab_t *lab = lab_current();
  return lab ? lab->trace_hash : 0;
}

uint64_t keel_lab_trace_events(void) {
  keel__lab_t *lab = lab_current();
  return lab ? lab->trace_events : 0;
}

void keel_lab_trace_note(uint64_t value) {
  keel__lab_t *lab = lab_current();
  if (lab)
    keel__lab_trace(lab, KEEL__LAB_EV_USER, value, (uint64_t)lab->now_ns);
}
