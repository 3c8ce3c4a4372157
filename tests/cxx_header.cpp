// keel's public headers from C++ (tests/cxx_header.sh compiles this with
// -fsyntax-only): the by-value sync types as members of a C++ struct, the
// static once initialiser, the macros a user calls, and the log's fields and sink.
#include <cerrno>

#include <keel/keel.h>

struct service {
  keel_mutex_t lock;
  keel_sem_t slots;
  keel_notify_t changed;
  keel_rwlock_t table_lock;
  keel_barrier_t start;
  keel_once_t setup;
  int counter;
};

static_assert(alignof(keel_mutex_t) == 8, "keel_mutex_t storage is 8-aligned");
static_assert(alignof(keel_sem_t) == 8, "keel_sem_t storage is 8-aligned");
static_assert(alignof(service) == 8, "a struct holding keel types keeps their alignment");

static keel_once_t global_once = KEEL_ONCE_INIT;

static int setup_fn(void *arg) {
  static_cast<service *>(arg)->counter = 1;
  return 0;
}

static int serve(void *arg) {
  service *svc = static_cast<service *>(arg);
  keel_once(&global_once, setup_fn, svc);
  if (keel_mutex_lock(&svc->lock) == 0) {
    svc->counter++;
    keel_mutex_unlock(&svc->lock);
  }
  if (keel_sem_acquire(&svc->slots, 1) == 0)
    keel_sem_release(&svc->slots, 1);
  keel_spawn_opts_t opts = {};
  opts.name = "setup";
  opts.on_worker = KEEL_WORKER(0);
  int rc = keel_spawn(keel_scope_current(), setup_fn, svc, &opts);
  if (rc < 0)
    return rc;
  return keel_sleep_ns(KEEL_NS_PER_MS);
}

// The log's field constructors and sink from C++ (KEEL_LOG_FIELDS is C
// only: C++ passes an array).
static void log_sink(void *arg, const keel_log_record_t *rec, const char *line, size_t len) {
  static_cast<service *>(arg)->counter += static_cast<int>(rec->nfields + (line[len - 1] == '\n'));
}

static void log_structured(service *svc) {
  const keel_log_field_t fields[] = {keel_log_str("peer", "127.0.0.1:5555"),
                                     keel_log_int("fd", 7),
                                     keel_log_uint("bytes", 10u),
                                     keel_log_double("ratio", 0.5),
                                     keel_log_bool("tls", true),
                                     keel_log_errno("err", -EPIPE)};
  keel_log_set_sink(log_sink, svc);
  keel_log_fields(KEEL_LOG_INFO, "accepted", fields, sizeof fields / sizeof fields[0]);
  keel_log_set_sink(nullptr, nullptr);
}

int main() {
  service svc{};
  log_structured(&svc);
  keel_mutex_init(&svc.lock);
  keel_sem_init(&svc.slots, KEEL_SEM_MAX);
  keel_notify_init(&svc.changed);
  keel_rwlock_init(&svc.table_lock);
  keel_once_init(&svc.setup);
  if (keel_barrier_init(&svc.start, 2) != 0)
    return 1;
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_LAB;
  int rc = keel_run(&cfg, serve, &svc);
  keel_barrier_destroy(&svc.start);
  keel_rwlock_destroy(&svc.table_lock);
  keel_notify_destroy(&svc.changed);
  keel_sem_destroy(&svc.slots);
  keel_mutex_destroy(&svc.lock);
  return rc < 0 || !keel_once_done(&global_once);
}
