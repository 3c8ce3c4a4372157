/* The stream calls' own contract, the same for every stream: 0 from a read
 * means end of stream and nothing else, so a read of nothing is refused. */
#include <limits.h>

#include "kt-guard.h"

/* a and b are the two ends of one connection. */
static int zero_reads(keel_stream_t *a, keel_stream_t *b) {
  char buf[8];
  CHECK_EQ(keel_read(a, buf, 0), -EINVAL);
  struct iovec empty[2] = {{buf, 0}, {buf + 1, 0}};
  CHECK_EQ(keel_readv(a, empty, 2), -EINVAL);
  CHECK_EQ(keel_readv(a, empty, 0), -EINVAL);
  CHECK_EQ(keel_readv(a, empty, IOV_MAX + 1), -EINVAL);
  /* An empty iovec ahead of a real one is fine. */
  struct iovec mixed[2] = {{buf, 0}, {buf, sizeof buf}};
  CHECK_RC(keel_write_all(b, "hi", 2, NULL));
  CHECK_EQ(keel_readv(a, mixed, 2), 2);
  CHECK(buf[0] == 'h' && buf[1] == 'i');
  /* And the stream still reports the real end of stream as 0. */
  CHECK_RC(keel_stream_shutdown(b, SHUT_WR));
  CHECK_EQ(keel_read(a, buf, sizeof buf), 0);
  return 0;
}

/* A TCP connection on the real backends; a lab pipe in lab mode. */
static int zero_reads_body(void *arg) {
  (void)arg;
  if (keel_lab_active()) {
    keel_stream_t *a, *b;
    CHECK_RC(keel_lab_pipe(NULL, &a, &b));
    int rc = zero_reads(a, b);
    keel_close(a);
    keel_close(b);
    return rc;
  }
  keel_listener_t *l;
  char addr[64];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  keel_tcp_t *c, *s;
  CHECK_RC(keel_tcp_connect(addr, &c));
  CHECK_RC(keel_tcp_accept(l, &s));
  int rc = zero_reads(keel_tcp_stream(s), keel_tcp_stream(c));
  keel_tcp_close(c);
  keel_tcp_close(s);
  keel_listener_close(l);
  return rc;
}

static void test_zero_length_read(void **state) {
  (void)state;
  kt_run_body(zero_reads_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_zero_length_read),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
