/* Cancellation from another worker's thread, landing while tasks are busy
 * with I/O: a cancel that arrives between a task's own check and its park
 * must interrupt that wait once, and the task must not be run again after
 * it has finished (it once was, on epoll, and jumped onto a freed stack).
 * Worker 1 runs echo pairs flat out; worker 0 cancels their scope. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel-test.h"
#include "keel/keel.h"
#include "kt-guard.h"

#define PAIRS 32
#define RUNS (40 / KT_SCALE + 2)
#define MSG 128

/* Writes then reads back its own bytes through the echo side, forever. */
static int ping_task(void *arg) {
  keel_tcp_t *c = arg;
  keel_stream_t *s = keel_tcp_stream(c);
  char buf[MSG];
  memset(buf, 'p', sizeof buf);
  while (keel_write_all(s, buf, sizeof buf, NULL) == 0 &&
         keel_read_exact(s, buf, sizeof buf, NULL) == 0)
    ;
  keel_tcp_close(c);
  return 0;
}

static int echo_task(void *arg) {
  keel_tcp_t *c = arg;
  keel_stream_t *s = keel_tcp_stream(c);
  char buf[MSG];
  for (;;) {
    ssize_t n = keel_read(s, buf, sizeof buf);
    if (n <= 0 || keel_write_all(s, buf, (size_t)n, NULL) < 0)
      break;
  }
  keel_tcp_close(c);
  return 0;
}

/* On worker 1: PAIRS connected pairs, each side its own task. */
static int busy_worker_task(void *arg) {
  atomic_int *started = arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sc != NULL);
  for (int i = 0; i < PAIRS; i++) {
    keel_tcp_t *client, *server;
    if (keel_tcp_connect(addr, &client) < 0)
      break;
    if (keel_tcp_accept(l, &server) < 0) {
      keel_tcp_close(client);
      break;
    }
    if (keel_spawn(sc, echo_task, server, NULL) < 0)
      keel_tcp_close(server);
    if (keel_spawn(sc, ping_task, client, NULL) < 0)
      keel_tcp_close(client);
  }
  atomic_store(started, 1);
  keel_scope_join(sc); /* until the cancel from worker 0 reaches us */
  keel_scope_close(sc);
  keel_listener_close(l);
  return 0;
}

static int cross_cancel_main(void *arg) {
  (void)arg;
  for (int run = 0; run < RUNS; run++) {
    atomic_int started = 0;
    keel_scope_t *sc = NULL;
    (void)keel_scope_open(NULL, &sc);
    CHECK(sc != NULL);
    keel_spawn_opts_t so = {.name = "busy", .on_worker = KEEL_WORKER(1)};
    CHECK_RC(keel_spawn(sc, busy_worker_task, &started, &so));
    while (!atomic_load(&started))
      CHECK_RC(keel_sleep_ms(1));
    CHECK_RC(keel_sleep_ms(5 + run % 7)); /* land the cancel at varied points */
    keel_scope_cancel(sc, KEEL_CANCEL_USER);
    int rc = keel_scope_join(sc);
    keel_scope_close(sc);
    CHECK(rc == 0 || rc == -ECANCELED);
  }
  return 0;
}

static void test_cross_worker_cancel_during_io(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    fprintf(stderr, "# backend %s\n", kt_backend_name(b));
    assert_int_equal(kt_run_guarded(b, 2, cross_cancel_main, NULL), 0);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cross_worker_cancel_during_io),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
