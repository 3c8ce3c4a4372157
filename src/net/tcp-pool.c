/* TCP for connection pools (tcp-pool-internal.h): a liveness check that
 * does not wait, and freeing after the loop has stopped.
 *
 * An idle pooled connection has no operation in flight: its last read
 * ended with the response it carried. So what the kernel holds is all
 * there is, except for what a readiness wait on io_uring may have received
 * into one of the worker's buffers (pend_len, pend_err) and what epoll saw
 * of a hang-up (rd_hup): those are checked first, then a MSG_PEEK of one
 * byte that does not block. A lab connection's pipe is looked at
 * directly. */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp-internal.h"
#include "tcp-pool-internal.h"

static int lab_readable_now(keel_tcp_t *c) {
  keel__pipe_end_t *e = &c->lab;
  keel__pipe_t *p = e->pipe;
  if (p->worker != keel__worker_current())
    return -EXDEV;
  keel__pipe_dir_t *d = &p->dir[!e->side];
  return e->closed || p->reset || d->len > 0 || d->write_shut || d->reader_gone;
}

int keel__tcp_readable_now(keel_tcp_t *c) {
  if (keel_tcp_fd(c) < 0)
    return lab_readable_now(c);
  keel__io_t *io = &c->io;
  if (io->worker != keel__worker_current())
    return -EXDEV;
  if (io->pend_len || io->pend_err || io->rd_hup || io->inflight)
    return 1;
  char byte;
  for (;;) {
    ssize_t n = recv(io->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 0)
      return 1; /* stray bytes, or the end of stream */
    if (errno == EINTR)
      continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : 1;
  }
}

void keel__tcp_free_stopped(keel_tcp_t *c) {
  /* On io_uring a registered descriptor stays open in the ring's table
   * until the ring goes, which the backend's destroy does next. */
  close(c->io.fd);
  free(c);
}
