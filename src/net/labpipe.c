/* In-memory pipes: keel_lab_pipe's stream pairs, and the pipe core that
 * lab-mode TCP connections use too (labpipe-internal.h). Faults are drawn
 * from keel_random (the lab seed in lab mode, so a run replays). Each
 * direction is a byte ring; readers and writers wait on its two lists and
 * are woken to look again, so cancellation never loses bytes: a read
 * returns what it copied, a write what it queued. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "worker.h"
#include "keel/lab.h"
#include "keel/stream-impl.h"
#include "labpipe-internal.h"

#define DEFAULT_CAPACITY (64 * 1024)

static bool chance(unsigned permille) { return permille > 0 && keel_random_below(1000) < permille; }

/* A short transfer moves a random part of what it could: 1..n bytes. */
static size_t maybe_short(const keel__pipe_t *p, size_t n) {
  if (n > 1 && chance(p->faults.short_permille))
    return 1 + (size_t)keel_random_below(n);
  return n;
}

void keel__pipe_reset(keel__pipe_t *p) {
  p->reset = true;
  for (int i = 0; i < 2; i++) {
    keel__waiters_wake_all(&p->dir[i].readers, 0);
    keel__waiters_wake_all(&p->dir[i].writers, 0);
  }
}

/* Checks common to every operation: owner, cancellation, an injected reset. */
static int op_begin(keel__pipe_end_t *e) {
  keel__pipe_t *p = e->pipe;
  if (keel__worker_current() != p->worker)
    return -EXDEV;
  if (e->closed)
    return -EBADF;
  int rc = keel__check_cancel();
  if (rc < 0)
    return rc;
  if (!p->reset && chance(p->faults.reset_permille))
    keel__pipe_reset(p);
  return p->reset ? -ECONNRESET : 0;
}

static void pipe_free(keel__pipe_t *p) {
  free(p->dir[0].buf);
  if (p->release)
    p->release(p);
}

/* Releases e once it is closed and no task of it is parked; the pipe goes
 * with its last end. */
static void end_release_if_done(keel__pipe_end_t *e) {
  if (!e->closed || e->parked > 0)
    return;
  keel__pipe_t *p = e->pipe;
  p->end[e->side] = NULL;
  if (e->release)
    e->release(e);
  if (!p->end[0] && !p->end[1])
    pipe_free(p);
}

/* Called by a task coming back from a wait: its end may have closed while
 * it was away, and the last task back releases it. */
static int unpark(keel__pipe_end_t *e, int rc) {
  e->parked--;
  if (e->closed) {
    end_release_if_done(e);
    return -EBADF;
  }
  return rc;
}

static int park_on(keel__pipe_end_t *e, keel__queue_t *list) {
  keel__wait_t w;
  bool reading = list == &e->pipe->dir[!e->side].readers;
  keel__wait_init(&w, keel__wait_abort_dequeue, reading ? KEEL__WAIT_RECV : KEEL__WAIT_SEND, e);
  w.alertable = reading;
  keel__queue_insert_tail(list, &w.node);
  e->parked++;
  return unpark(e, (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0));
}

static size_t iov_total(const struct iovec *iov, int iovcnt) {
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  return total;
}

/* Copies up to n bytes out of d into iov. */
static size_t dir_take(keel__pipe_dir_t *d, size_t cap, const struct iovec *iov, int iovcnt,
                       size_t n) {
  size_t done = 0;
  for (int i = 0; i < iovcnt && done < n; i++) {
    size_t want = iov[i].iov_len < n - done ? iov[i].iov_len : n - done;
    for (size_t got = 0; got < want;) {
      size_t chunk = cap - d->head < want - got ? cap - d->head : want - got;
      memcpy((char *)iov[i].iov_base + got, d->buf + d->head, chunk);
      d->head = (d->head + chunk) % cap;
      got += chunk;
    }
    done += want;
  }
  d->len -= done;
  return done;
}

/* Copies up to n bytes of iov into d. */
static size_t dir_put(keel__pipe_dir_t *d, size_t cap, const struct iovec *iov, int iovcnt,
                      size_t n) {
  size_t done = 0;
  for (int i = 0; i < iovcnt && done < n; i++) {
    size_t want = iov[i].iov_len < n - done ? iov[i].iov_len : n - done;
    for (size_t put = 0; put < want;) {
      size_t tail = (d->head + d->len) % cap;
      size_t chunk = cap - tail < want - put ? cap - tail : want - put;
      memcpy(d->buf + tail, (const char *)iov[i].iov_base + put, chunk);
      d->len += chunk;
      put += chunk;
    }
    done += want;
  }
  return done;
}

ssize_t keel__pipe_readv(keel__pipe_end_t *e, const struct iovec *iov, int iovcnt) {
  keel__pipe_t *p = e->pipe;
  keel__pipe_dir_t *d = &p->dir[!e->side];
  size_t want = iov_total(iov, iovcnt);
  for (;;) {
    int rc = op_begin(e);
    if (rc < 0)
      return rc;
    if (want == 0)
      return 0;
    if (d->len > 0) {
      size_t n = dir_take(d, p->cap, iov, iovcnt, maybe_short(p, d->len < want ? d->len : want));
      keel__waiters_wake_all(&d->writers, 0);
      return (ssize_t)n;
    }
    if (d->write_shut || d->reader_gone)
      return 0; /* end of stream, or this end shut its reading side */
    rc = park_on(e, &d->readers);
    if (rc < 0)
      return rc;
  }
}

int keel__pipe_wait_readable(keel__pipe_end_t *e) {
  keel__pipe_dir_t *d = &e->pipe->dir[!e->side];
  for (;;) {
    int rc = op_begin(e);
    if (rc < 0)
      return rc == -ECONNRESET ? 0 : rc; /* a read fails at once */
    if (d->len > 0 || d->write_shut || d->reader_gone)
      return 0;
    rc = park_on(e, &d->readers);
    if (rc < 0)
      return rc;
  }
}

void keel__pipe_arm_readable(keel__pipe_end_t *e, keel__wait_t *w) {
  keel__wait_init(w, keel__wait_abort_dequeue, KEEL__WAIT_READABLE, e);
  w->alertable = true;
  keel__pipe_dir_t *d = &e->pipe->dir[!e->side];
  if (e->closed || keel__worker_current() != e->pipe->worker) {
    keel__wait_complete(w, e->closed ? -EBADF : -EXDEV);
    return;
  }
  if (e->pipe->reset || d->len > 0 || d->write_shut || d->reader_gone) {
    keel__wait_complete(w, 0); /* a read would not park */
    return;
  }
  keel__queue_insert_tail(&d->readers, &w->node);
  e->parked++;
  w->data = e;
}

int keel__pipe_readable_done(keel__pipe_end_t *e, keel__wait_t *w) {
  int rc = (int)w->result;
  return w->data ? unpark(e, rc) : rc;
}

ssize_t keel__pipe_writev(keel__pipe_end_t *e, const struct iovec *iov, int iovcnt) {
  keel__pipe_t *p = e->pipe;
  keel__pipe_dir_t *d = &p->dir[e->side];
  size_t want = iov_total(iov, iovcnt);
  int rc = op_begin(e);
  if (rc < 0)
    return rc;
  if (p->faults.delay_max_ns > 0) {
    e->parked++;
    rc = keel_sleep_ns((int64_t)keel_random_below((uint64_t)p->faults.delay_max_ns + 1));
    rc = unpark(e, rc);
    if (rc < 0)
      return rc;
  }
  for (;;) {
    if (d->write_shut || d->reader_gone)
      return -EPIPE;
    if (want == 0)
      return 0;
    size_t room = p->cap - d->len;
    if (room > 0) {
      size_t n = dir_put(d, p->cap, iov, iovcnt, maybe_short(p, room < want ? room : want));
      keel__waiters_wake_all(&d->readers, 0);
      return (ssize_t)n;
    }
    rc = park_on(e, &d->writers);
    if (rc == 0)
      rc = op_begin(e);
    if (rc < 0)
      return rc;
  }
}

int keel__pipe_shutdown(keel__pipe_end_t *e, int how) {
  keel__pipe_t *p = e->pipe;
  if (keel__worker_current() != p->worker)
    return -EXDEV;
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
    return -EINVAL;
  if (how != SHUT_RD) {
    p->dir[e->side].write_shut = true;
    keel__waiters_wake_all(&p->dir[e->side].readers, 0);
    keel__waiters_wake_all(&p->dir[e->side].writers, 0);
  }
  if (how != SHUT_WR) {
    keel__pipe_dir_t *in = &p->dir[!e->side];
    in->reader_gone = true;
    in->len = 0; /* unread bytes are discarded, as a socket does */
    keel__waiters_wake_all(&in->readers, 0);
    keel__waiters_wake_all(&in->writers, 0);
  }
  return 0;
}

int keel__pipe_close(keel__pipe_end_t *e) {
  keel__pipe_t *p = e->pipe;
  if (keel__worker_current() != p->worker)
    return -EXDEV;
  /* Tasks still parked on this end wake with -EBADF; the end outlives them. */
  e->closed = true;
  keel__waiters_wake_all(&p->dir[!e->side].readers, -EBADF);
  keel__waiters_wake_all(&p->dir[e->side].writers, -EBADF);
  keel__pipe_shutdown(e, SHUT_RDWR);
  end_release_if_done(e);
  return 0;
}

void keel__pipe_destroy(keel__pipe_t *p) {
  for (int i = 0; i < 2; i++) {
    keel__pipe_end_t *e = p->end[i];
    p->end[i] = NULL;
    if (e && e->release)
      e->release(e);
  }
  pipe_free(p);
}

int keel__pipe_faults_check(const keel_lab_faults_t *f) {
  if (f->short_permille > 1000 || f->reset_permille > 1000 || f->delay_max_ns < 0 ||
      f->capacity > SIZE_MAX / 2)
    return -EINVAL;
  return 0;
}

int keel__pipe_init(keel__pipe_t *p, const keel_lab_faults_t *faults, keel__pipe_end_t *a,
                    keel__pipe_end_t *b) {
  keel__worker_t *w = keel__worker_current();
  keel_lab_faults_t none = {0};
  if (!faults)
    faults = &none;
  if (!w || keel__pipe_faults_check(faults) < 0)
    return -EINVAL;
  size_t cap = faults->capacity ? faults->capacity : DEFAULT_CAPACITY;
  char *bufs = malloc(2 * cap);
  if (!bufs)
    return -ENOMEM;
  memset(p, 0, sizeof *p);
  p->faults = *faults;
  p->cap = cap;
  p->worker = w;
  keel__pipe_end_t *ends[2] = {a, b};
  for (int i = 0; i < 2; i++) {
    p->dir[i].buf = bufs + (size_t)i * cap;
    keel__queue_init(&p->dir[i].readers);
    keel__queue_init(&p->dir[i].writers);
    *ends[i] = (keel__pipe_end_t){.pipe = p, .side = i};
    p->end[i] = ends[i];
  }
  return 0;
}

/* ---- keel_lab_pipe: two streams over one pipe, in one allocation ------------- */

typedef struct pipe_stream {
  keel_stream_t super;
  keel__pipe_end_t end;
} pipe_stream_t;

typedef struct lab_pipe {
  keel__pipe_t pipe;
  pipe_stream_t stream[2];
} lab_pipe_t;

static keel__pipe_end_t *end_of(keel_stream_t *s) { return &((pipe_stream_t *)s)->end; }

static ssize_t pipe_readv(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  return keel__pipe_readv(end_of(s), iov, iovcnt);
}
static ssize_t pipe_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  return keel__pipe_writev(end_of(s), iov, iovcnt);
}
static int pipe_shutdown(keel_stream_t *s, int how) { return keel__pipe_shutdown(end_of(s), how); }
static int pipe_close(keel_stream_t *s) { return keel__pipe_close(end_of(s)); }
static int pipe_wait_readable(keel_stream_t *s) { return keel__pipe_wait_readable(end_of(s)); }

static int pipe_query(keel_stream_t *s, int what, void *arg, size_t len) {
  keel__pipe_t *p = end_of(s)->pipe;
  (void)len;
  switch (what) {
  case KEEL_STREAM_Q_WORKER:
    *(int *)arg = p->worker->id;
    return 0;
  case KEEL__STREAM_Q_LAB_PIPE:
    *(keel__pipe_t **)arg = p;
    return 0;
  default:
    return -ENOTSUP;
  }
}

static const keel_stream_ops_t pipe_ops = {
    .name = "lab-pipe",
    .query = pipe_query,
    .wait_readable = pipe_wait_readable,
    .readv = pipe_readv,
    .writev = pipe_writev,
    .shutdown = pipe_shutdown,
    .close = pipe_close,
};

static void lab_pipe_release(keel__pipe_t *p) { free(keel__container_of(p, lab_pipe_t, pipe)); }

int keel_lab_pipe(const keel_lab_faults_t *faults, keel_stream_t **a, keel_stream_t **b) {
  if (!keel__worker_current() || !a || !b || (faults && keel__pipe_faults_check(faults) < 0))
    return -EINVAL;
  lab_pipe_t *lp = malloc(sizeof *lp);
  if (!lp)
    return -ENOMEM;
  int rc = keel__pipe_init(&lp->pipe, faults, &lp->stream[0].end, &lp->stream[1].end);
  if (rc < 0) {
    free(lp);
    return rc;
  }
  lp->pipe.release = lab_pipe_release;
  for (int i = 0; i < 2; i++)
    keel_stream_init(&lp->stream[i].super, &pipe_ops, NULL);
  *a = &lp->stream[0].super;
  *b = &lp->stream[1].super;
  return 0;
}

int keel_lab_pipe_reset(keel_stream_t *s) {
  keel__pipe_t *p = NULL;
  if (!s || keel_stream_query(s, KEEL__STREAM_Q_LAB_PIPE, &p, sizeof p) < 0 || !p)
    return -EINVAL;
  if (keel__worker_current() != p->worker)
    return -EXDEV;
  keel__pipe_reset(p);
  return 0;
}
