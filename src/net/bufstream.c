/* Buffered streams (keel/bufstream.h): a read buffer over any stream.
 *
 * The buffer exists only while bytes are buffered or a fill is under way:
 * an idle connection holds none. Buffers come from small free lists on
 * the worker, one per capacity in use (the default one, the HTTP server's
 * header limit plus a margin, ...: at most BUF_CLASSES of them), so a
 * connection that reads one message at a time does not malloc per
 * message; a capacity beyond those classes is plain malloc/free. A buffered stream is used only
 * from its worker, which is what lets that list go without a lock.
 *
 * A reader parked in the inner stream comes back to b, which another task
 * may have closed meanwhile: b counts such tasks (`parked`) and the last
 * one out frees it, as the lab pipe does. Paths that return straight from
 * the inner stream without touching b need no count (writes, waits). */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "bufstream-internal.h"
#include "worker.h"
#include "keel/bufstream.h"
#include "keel/stream-impl.h"

#if KEEL_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(addr, size) __asan_poison_memory_region((addr), (size))
#define UNPOISON(addr, size) __asan_unpoison_memory_region((addr), (size))
#else
#define POISON(addr, size) ((void)(addr), (void)(size))
#define UNPOISON(addr, size) ((void)(addr), (void)(size))
#endif

/* Free buffers a worker keeps per capacity (1 MiB at 16 KiB each), and
 * the capacities it keeps them for. */
#define BUF_CACHE_MAX 64
#define BUF_CLASSES 4

struct keel_bufstream {
  keel_stream_t super;
  keel__worker_t *worker; /* the inner stream's: b is used only there */
  size_t capacity;
  char *buf;        /* NULL unless bytes are buffered or a read is under way */
  size_t head, len; /* the buffered bytes: buf[head, head + len) */
  int parked;       /* tasks in the inner stream that come back to b */
  bool reading;     /* the one reader is parked in the inner stream */
  bool closed;      /* closed while tasks were parked: the last one frees b */
};

/* A cached buffer's first bytes link it to the next. */
typedef struct cached_buf {
  struct cached_buf *next;
} cached_buf_t;

/* The worker's free buffers of one capacity. */
typedef struct buf_list {
  size_t capacity; /* 0: the class is free */
  cached_buf_t *head;
  size_t len;
} buf_list_t;

/* The worker's free buffers: its KEEL__SLOT_BUFS slot, made on first use. */
typedef struct buf_cache {
  buf_list_t lists[BUF_CLASSES];
} buf_cache_t;

/* ---- The worker's buffers ---------------------------------------------- */

static void cache_destroy(keel__worker_t *w, void *state) {
  (void)w;
  buf_cache_t *cache = state;
  for (int i = 0; i < BUF_CLASSES; i++) {
    buf_list_t *l = &cache->lists[i];
    while (l->head) {
      cached_buf_t *c = l->head;
      l->head = c->next;
      UNPOISON(c, l->capacity);
      free(c);
    }
  }
  free(cache);
}

/* NULL without memory for it: buffers are then plain malloc and free. */
static buf_cache_t *cache_of(keel__worker_t *w) {
  keel__slot_t *slot = &w->slots[KEEL__SLOT_BUFS];
  if (KEEL__UNLIKELY(!slot->state)) {
    slot->state = calloc(1, sizeof(buf_cache_t));
    slot->destroy = slot->state ? cache_destroy : NULL;
  }
  return slot->state;
}

size_t keel__bufstream_cached(keel__worker_t *w) {
  buf_cache_t *cache = w->slots[KEEL__SLOT_BUFS].state;
  size_t n = 0;
  for (int i = 0; cache && i < BUF_CLASSES; i++)
    n += cache->lists[i].len;
  return n;
}

/* The list for buffers of this capacity: the one kept for it, else a free
 * class taken for it; NULL when every class keeps another capacity. */
static buf_list_t *list_of(buf_cache_t *cache, size_t capacity, bool take_free) {
  buf_list_t *free_class = NULL;
  for (int i = 0; cache && i < BUF_CLASSES; i++) {
    if (cache->lists[i].capacity == capacity)
      return &cache->lists[i];
    if (!free_class && cache->lists[i].capacity == 0)
      free_class = &cache->lists[i];
  }
  if (!take_free || !free_class)
    return NULL;
  free_class->capacity = capacity;
  return free_class;
}

static char *buf_take(keel__worker_t *w, size_t capacity) {
  buf_list_t *l = list_of(cache_of(w), capacity, false);
  cached_buf_t *c = l ? l->head : NULL;
  if (!c)
    return malloc(capacity);
  UNPOISON(c, capacity);
  l->head = c->next;
  l->len--;
  return (char *)c;
}

static void buf_give(keel__worker_t *w, char *buf, size_t capacity) {
  buf_list_t *l = list_of(cache_of(w), capacity, true);
  if (!l || l->len >= BUF_CACHE_MAX) {
    free(buf);
    return;
  }
  cached_buf_t *c = (cached_buf_t *)buf;
  c->next = l->head;
  l->head = c;
  l->len++;
  /* A stale pointer into a cached buffer is reported, not read silently. */
  POISON(buf + sizeof *c, capacity - sizeof *c);
}

/* ---- Buffer state ------------------------------------------------------- */

/* Gives the buffer back once nothing is buffered and no read fills it. */
static void buf_settle(keel_bufstream_t *b) {
  if (b->len > 0 || b->reading)
    return;
  b->head = 0;
  if (b->buf) {
    buf_give(b->worker, b->buf, b->capacity);
    b->buf = NULL;
  }
}

static void bufstream_free(keel_bufstream_t *b) {
  b->len = 0;
  b->reading = false;
  buf_settle(b);
  free(b);
}

/* Moves the buffered bytes to the front when the room after them runs
 * low: a read into a sliver of room would cost a system call for a few
 * bytes, and moving earlier would copy bytes for room nobody needs yet. */
static void make_room(keel_bufstream_t *b) {
  size_t room = b->capacity - b->head - b->len;
  if (b->head > 0 && room <= b->capacity / 8) {
    memmove(b->buf, b->buf + b->head, b->len);
    b->head = 0;
  }
}

/* The checks before a read: owner, one reader, a poisoned direction. */
static int read_check(keel_bufstream_t *b) {
  if (keel__worker_current() != b->worker)
    return -EXDEV;
  if (b->reading)
    return -EBUSY;
  return b->super.rd_poison;
}

/* Marks the reader as parked in the inner stream... */
static void read_park(keel_bufstream_t *b) {
  b->reading = true;
  b->parked++;
}

/* ... and back: -EBADF if b was closed meanwhile (freed by the last task
 * out), else result. */
static ssize_t read_unpark(keel_bufstream_t *b, ssize_t result) {
  b->parked--;
  if (b->closed) {
    if (b->parked == 0)
      bufstream_free(b);
    return -EBADF;
  }
  b->reading = false;
  buf_settle(b);
  return result;
}

/* ---- Fill, peek, consume, read until ------------------------------------ */

/* One read into the buffer, taken only once the inner stream is readable;
 * the caller has parked. */
static ssize_t fill_parked(keel_bufstream_t *b) {
  if (!b->buf) {
    int rc = keel_stream_wait_readable(b->super.inner);
    if (b->closed)
      return -EBADF;
    if (rc < 0 && rc != -ENOTSUP)
      return rc;
    b->buf = buf_take(b->worker, b->capacity);
    if (!b->buf)
      return -ENOMEM;
  }
  make_room(b);
  size_t tail = b->head + b->len;
  ssize_t n = keel_read(b->super.inner, b->buf + tail, b->capacity - tail);
  if (n > 0 && !b->closed)
    b->len += (size_t)n;
  return n;
}

ssize_t keel_bufstream_fill(keel_bufstream_t *b) {
  int rc = read_check(b);
  if (rc < 0)
    return rc;
  if (b->len == b->capacity)
    return -EMSGSIZE;
  read_park(b);
  return read_unpark(b, fill_parked(b));
}

const void *keel_bufstream_peek(keel_bufstream_t *b, size_t *len) {
  assert(keel__worker_current() == b->worker);
  *len = b->len;
  return b->len ? b->buf + b->head : NULL;
}

void keel_bufstream_consume(keel_bufstream_t *b, size_t n) {
  assert(keel__worker_current() == b->worker);
  assert(n <= b->len);
  b->head += n;
  b->len -= n;
  buf_settle(b);
}

size_t keel_bufstream_buffered(const keel_bufstream_t *b) { return b->len; }

size_t keel_bufstream_held(const keel_bufstream_t *b) { return b->buf ? b->capacity : 0; }

ssize_t keel_bufstream_read_until(keel_bufstream_t *b, const void *delim, size_t dlen, size_t limit,
                                  const void **start) {
  if (!delim || dlen == 0 || !start)
    return -EINVAL;
  int rc = read_check(b);
  if (rc < 0)
    return rc;
  if (limit > b->capacity)
    limit = b->capacity;
  if (limit < dlen)
    return -EMSGSIZE;  /* a shrinking budget (headers left) can fall below it */
  size_t searched = 0; /* offsets from head where no delimiter begins */
  for (;;) {
    size_t window = b->len < limit ? b->len : limit;
    if (window >= dlen) {
      const char *first = b->buf + b->head;
      const char *hit = memmem(first + searched, window - searched, delim, dlen);
      if (hit) {
        *start = first;
        return hit + dlen - first;
      }
      searched = window - dlen + 1; /* the next delimiter may begin after */
    }
    if (b->len >= limit)
      return -EMSGSIZE;
    ssize_t n = keel_bufstream_fill(b);
    if (n <= 0)
      return n == 0 ? -EPIPE : n;
  }
}

/* ---- Detach ---------------------------------------------------------------- */

int keel_bufstream_detach(keel_bufstream_t *b, keel_stream_t **inner, void *rest, size_t cap,
                          size_t *rest_len) {
  if (!inner || !rest_len || (cap > 0 && !rest))
    return -EINVAL;
  if (keel__worker_current() != b->worker)
    return -EXDEV;
  if (b->reading)
    return -EBUSY;
  if (b->len > cap)
    return -EMSGSIZE;
  if (b->len > 0)
    memcpy(rest, b->buf + b->head, b->len);
  *rest_len = b->len;
  *inner = b->super.inner;
  bufstream_free(b);
  return 0;
}

/* ---- Stream ops ------------------------------------------------------------ */

static size_t iov_total(const struct iovec *iov, int iovcnt) {
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  return total;
}

/* Copies buffered bytes into iov and consumes them. */
static ssize_t copy_out(keel_bufstream_t *b, const struct iovec *iov, int iovcnt) {
  size_t done = 0;
  for (int i = 0; i < iovcnt && done < b->len; i++) {
    size_t n = iov[i].iov_len < b->len - done ? iov[i].iov_len : b->len - done;
    memcpy(iov[i].iov_base, b->buf + b->head + done, n);
    done += n;
  }
  keel_bufstream_consume(b, done);
  return (ssize_t)done;
}

/* Buffered bytes first, without reading more. With none, a read at least
 * as large as the buffer goes straight into the caller's memory: copying
 * through the buffer would only add a copy. */
static ssize_t buf_readv(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  keel_bufstream_t *b = (keel_bufstream_t *)s;
  int rc = read_check(b);
  if (rc < 0)
    return rc;
  if (b->len == 0) {
    if (iov_total(iov, iovcnt) >= b->capacity) {
      read_park(b);
      return read_unpark(b, keel_readv(s->inner, iov, iovcnt));
    }
    ssize_t n = keel_bufstream_fill(b);
    if (n <= 0)
      return n;
  }
  return copy_out(b, iov, iovcnt);
}

/* Writes never touch the buffer, so a writer and the reader run side by
 * side; a writer parked in the inner stream does not come back to b. */
static ssize_t buf_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  keel_bufstream_t *b = (keel_bufstream_t *)s;
  if (keel__worker_current() != b->worker)
    return -EXDEV;
  return keel_writev(s->inner, iov, iovcnt);
}

static int buf_shutdown(keel_stream_t *s, int how) {
  keel_bufstream_t *b = (keel_bufstream_t *)s;
  if (keel__worker_current() != b->worker)
    return -EXDEV;
  return keel_stream_shutdown(s->inner, how);
}

/* Closing the inner stream wakes the tasks parked in it (-EBADF); they
 * come back to b, so b lives until the last of them (and this close,
 * which may park too) is out. */
static int buf_close(keel_stream_t *s) {
  keel_bufstream_t *b = (keel_bufstream_t *)s;
  if (keel__worker_current() != b->worker)
    return -EXDEV;
  b->closed = true;
  b->parked++;
  int rc = keel_close(s->inner);
  if (--b->parked == 0)
    bufstream_free(b);
  return rc;
}

static int buf_detach(keel_stream_t *s, keel_stream_t **inner) {
  keel_bufstream_t *b = (keel_bufstream_t *)s;
  if (keel__worker_current() != b->worker)
    return -EXDEV;
  if (b->len > 0 || b->reading)
    return -EBUSY;
  *inner = s->inner;
  bufstream_free(b);
  return 0;
}

static int buf_wait_readable(keel_stream_t *s) {
  keel_bufstream_t *b = (keel_bufstream_t *)s;
  if (keel__worker_current() != b->worker)
    return -EXDEV;
  if (b->len > 0)
    return 0;
  return keel_stream_wait_readable(s->inner);
}

static const keel_stream_ops_t bufstream_ops = {
    .name = "buffered",
    .readv = buf_readv,
    .writev = buf_writev,
    .shutdown = buf_shutdown,
    .close = buf_close,
    .detach = buf_detach,
    .wait_readable = buf_wait_readable,
};

keel_stream_t *keel_bufstream_stream(keel_bufstream_t *b) { return &b->super; }

int keel_bufstream_open(keel_stream_t *inner, const keel_bufstream_opts_t *opts,
                        keel_bufstream_t **out) {
  static const keel_bufstream_opts_t defaults = {0};
  keel__worker_t *w = keel__worker_current();
  if (out)
    *out = NULL;
  if (!opts)
    opts = &defaults;
  if (!inner || !out || !w || opts->capacity > SSIZE_MAX)
    return -EINVAL;
  int worker_id;
  if (keel_stream_query(inner, KEEL_STREAM_Q_WORKER, &worker_id, sizeof worker_id) == 0 &&
      worker_id != w->id)
    return -EXDEV;
  keel_bufstream_t *b = calloc(1, sizeof *b);
  if (!b)
    return -ENOMEM;
  keel_stream_init(&b->super, &bufstream_ops, inner);
  b->worker = w;
  b->capacity = opts->capacity ? opts->capacity : KEEL_BUFSTREAM_DEFAULT_CAPACITY;
  *out = b;
  return 0;
}
