/* keel_lab_pipe: a pair of connected in-memory streams, with faults drawn
 * from keel_random (the lab seed in lab mode, so a run replays). Each
 * direction is a byte ring; readers and writers wait on its two lists and
 * are woken to look again, so cancellation never loses bytes: a read
 * returns what it copied, a write what it queued. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "keel/lab.h"
#include "keel/stream-impl.h"

#define DEFAULT_CAPACITY (64 * 1024)

typedef struct pipe_dir {
  char *buf;
  size_t head, len; /* bytes queued start at buf[head], wrapping */
  keel__queue_t readers, writers;
  bool write_shut;  /* the writing end shut down or closed: EOF after the bytes */
  bool reader_gone; /* the reading end shut down or closed: writes fail */
} pipe_dir_t;

typedef struct pipe_pair pipe_pair_t;

typedef struct pipe_end {
  keel_stream_t super;
  pipe_pair_t *pair;
  int side; /* writes go to dir[side], reads come from dir[!side] */
  bool closed;
} pipe_end_t;

struct pipe_pair {
  pipe_end_t end[2];
  pipe_dir_t dir[2];
  keel_lab_faults_t faults;
  size_t cap;
  keel__worker_t *worker;
  bool reset;
  int open_ends;
  int parked; /* tasks waiting inside an operation: they hold the pair */
};

static bool chance(unsigned permille) { return permille > 0 && keel_random_below(1000) < permille; }

/* A short transfer moves a random part of what it could: 1..n bytes. */
static size_t maybe_short(const pipe_pair_t *p, size_t n) {
  if (n > 1 && chance(p->faults.short_permille))
    return 1 + (size_t)keel_random_below(n);
  return n;
}

static void wake_all(pipe_pair_t *p, ssize_t result) {
  for (int i = 0; i < 2; i++) {
    keel__waiters_wake_all(&p->dir[i].readers, result);
    keel__waiters_wake_all(&p->dir[i].writers, result);
  }
}

static void pair_reset(pipe_pair_t *p) {
  p->reset = true;
  wake_all(p, 0);
}

/* Checks common to every operation: owner, cancellation, an injected reset. */
static int op_begin(pipe_end_t *e) {
  pipe_pair_t *p = e->pair;
  if (keel__worker_current() != p->worker)
    return -EXDEV;
  if (e->closed)
    return -EBADF;
  int rc = keel__check_cancel();
  if (rc < 0)
    return rc;
  if (!p->reset && chance(p->faults.reset_permille))
    pair_reset(p);
  return p->reset ? -ECONNRESET : 0;
}

static void pair_release(pipe_pair_t *p) {
  if (p->open_ends == 0 && p->parked == 0) {
    free(p->dir[0].buf);
    free(p);
  }
}

/* Called by a task coming back from a wait: both ends may have closed while
 * it was away, and the last one back frees the pair. */
static int unpark(pipe_end_t *e, int rc) {
  pipe_pair_t *p = e->pair;
  p->parked--;
  if (e->closed) {
    pair_release(p);
    return -EBADF;
  }
  return rc;
}

static int park_on(pipe_end_t *e, keel__queue_t *list) {
  keel__wait_t w;
  keel__wait_init(&w, keel__wait_abort_dequeue);
  keel__queue_insert_tail(list, &w.node);
  e->pair->parked++;
  return unpark(e, (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0));
}

static size_t iov_total(const struct iovec *iov, int iovcnt) {
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  return total;
}

/* Copies up to n bytes out of d into iov. */
static size_t dir_take(pipe_dir_t *d, size_t cap, const struct iovec *iov, int iovcnt, size_t n) {
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
static size_t dir_put(pipe_dir_t *d, size_t cap, const struct iovec *iov, int iovcnt, size_t n) {
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

static ssize_t pipe_readv(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  pipe_end_t *e = (pipe_end_t *)s;
  pipe_pair_t *p = e->pair;
  pipe_dir_t *d = &p->dir[!e->side];
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

static int pipe_wait_readable(keel_stream_t *s) {
  pipe_end_t *e = (pipe_end_t *)s;
  pipe_dir_t *d = &e->pair->dir[!e->side];
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

static int pipe_query(keel_stream_t *s, int what, void *arg, size_t len) {
  pipe_end_t *e = (pipe_end_t *)s;
  (void)len;
  if (what != KEEL_STREAM_Q_WORKER)
    return -ENOTSUP;
  *(int *)arg = e->pair->worker->id;
  return 0;
}

static ssize_t pipe_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  pipe_end_t *e = (pipe_end_t *)s;
  pipe_pair_t *p = e->pair;
  pipe_dir_t *d = &p->dir[e->side];
  size_t want = iov_total(iov, iovcnt);
  int rc = op_begin(e);
  if (rc < 0)
    return rc;
  if (p->faults.delay_max_ns > 0) {
    p->parked++;
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

static int pipe_shutdown(keel_stream_t *s, int how) {
  pipe_end_t *e = (pipe_end_t *)s;
  pipe_pair_t *p = e->pair;
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
    pipe_dir_t *in = &p->dir[!e->side];
    in->reader_gone = true;
    in->len = 0; /* unread bytes are discarded, as a socket does */
    keel__waiters_wake_all(&in->readers, 0);
    keel__waiters_wake_all(&in->writers, 0);
  }
  return 0;
}

static int pipe_close(keel_stream_t *s) {
  pipe_end_t *e = (pipe_end_t *)s;
  pipe_pair_t *p = e->pair;
  if (keel__worker_current() != p->worker)
    return -EXDEV;
  /* Tasks still parked on this end wake with -EBADF; the pair outlives them. */
  e->closed = true;
  keel__waiters_wake_all(&p->dir[!e->side].readers, -EBADF);
  keel__waiters_wake_all(&p->dir[e->side].writers, -EBADF);
  pipe_shutdown(s, SHUT_RDWR);
  p->open_ends--;
  pair_release(p);
  return 0;
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

int keel_lab_pipe(const keel_lab_faults_t *faults, keel_stream_t **a, keel_stream_t **b) {
  keel__worker_t *w = keel__worker_current();
  if (!w || !a || !b)
    return -EINVAL;
  keel_lab_faults_t none = {0};
  if (!faults)
    faults = &none;
  if (faults->short_permille > 1000 || faults->reset_permille > 1000 || faults->delay_max_ns < 0)
    return -EINVAL;
  size_t cap = faults->capacity ? faults->capacity : DEFAULT_CAPACITY;
  if (cap > SIZE_MAX / 2)
    return -EINVAL;
  pipe_pair_t *p = calloc(1, sizeof *p);
  char *bufs = p ? malloc(2 * cap) : NULL;
  if (!bufs) {
    free(p);
    return -ENOMEM;
  }
  p->faults = *faults;
  p->cap = cap;
  p->worker = w;
  p->open_ends = 2;
  for (int i = 0; i < 2; i++) {
    p->dir[i].buf = bufs + (size_t)i * cap;
    keel__queue_init(&p->dir[i].readers);
    keel__queue_init(&p->dir[i].writers);
    p->end[i] = (pipe_end_t){.super = {&pipe_ops, NULL, 0, 0}, .pair = p, .side = i};
  }
  *a = &p->end[0].super;
  *b = &p->end[1].super;
  return 0;
}

int keel_lab_pipe_reset(keel_stream_t *s) {
  if (!s || s->ops != &pipe_ops)
    return -EINVAL;
  pipe_end_t *e = (pipe_end_t *)s;
  if (keel__worker_current() != e->pair->worker)
    return -EXDEV;
  pair_reset(e->pair);
  return 0;
}
