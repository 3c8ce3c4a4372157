/* keel's BIO: OpenSSL reads ciphertext from, and writes it to, the TLS
 * stream's own buffers, never a socket. It never blocks: with nothing to
 * give (or no room) it asks OpenSSL to retry, and the task that called
 * OpenSSL then reads or writes the inner stream (parking there, outside
 * OpenSSL) and calls again. So OpenSSL's state is only ever touched by one
 * task at a time, and never across a park.
 *
 * The buffers exist only while ciphertext is in flight; they come from a
 * small free list per worker (the KEEL__SLOT_TLS slot), so a connection
 * that handles one message at a time does not malloc per message. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>

#include "tls-internal.h"

/* Free buffers a worker keeps of each size. */
#define BUF_CACHE_MAX 16

typedef struct cached_buf {
  struct cached_buf *next;
} cached_buf_t;

typedef struct buf_list {
  cached_buf_t *head;
  size_t len;
} buf_list_t;

typedef struct tls_bufs {
  buf_list_t rd, wr;
} tls_bufs_t;

static void bufs_destroy(keel__worker_t *w, void *state) {
  (void)w;
  tls_bufs_t *bufs = state;
  buf_list_t *lists[] = {&bufs->rd, &bufs->wr};
  for (size_t i = 0; i < 2; i++) {
    while (lists[i]->head) {
      cached_buf_t *c = lists[i]->head;
      lists[i]->head = c->next;
      free(c);
    }
  }
  free(bufs);
}

static buf_list_t *list_of(keel__worker_t *w, size_t size) {
  keel__slot_t *slot = &w->slots[KEEL__SLOT_TLS];
  if (KEEL__UNLIKELY(!slot->state)) {
    slot->state = calloc(1, sizeof(tls_bufs_t));
    slot->destroy = slot->state ? bufs_destroy : NULL;
    if (!slot->state)
      return NULL;
  }
  tls_bufs_t *bufs = slot->state;
  return size == TLS_RBUF_CAP ? &bufs->rd : &bufs->wr;
}

char *keel__tls_buf_take(keel__worker_t *w, size_t size) {
  buf_list_t *l = list_of(w, size);
  if (!l || !l->head)
    return malloc(size);
  cached_buf_t *c = l->head;
  l->head = c->next;
  l->len--;
  return (char *)c;
}

void keel__tls_buf_give(keel__worker_t *w, char *buf, size_t size) {
  buf_list_t *l = list_of(w, size);
#if KEEL_ASAN || KEEL_TSAN
  l = NULL; /* the sanitizers see every free */
#endif
  if (!l || l->len >= BUF_CACHE_MAX) {
    free(buf);
    return;
  }
  cached_buf_t *c = (cached_buf_t *)buf;
  c->next = l->head;
  l->head = c;
  l->len++;
}

void keel__tls_bufs_settle(keel_tls_t *t) {
  if (t->rbuf && t->rlen == 0 && !t->reading) {
    keel__tls_buf_give(t->worker, t->rbuf, TLS_RBUF_CAP);
    t->rbuf = NULL;
    t->rhead = 0;
  }
  if (t->wbuf && t->wlen == 0 && !t->flushing && !t->writing) {
    keel__tls_buf_give(t->worker, t->wbuf, TLS_WBUF_ALLOC);
    t->wbuf = NULL;
    t->whead = 0;
  }
}

/* ---- Record boundaries ---------------------------------------------------- */

/* Follows the record headers in the n bytes handed to OpenSSL. */
static void track_records(keel_tls_t *t, const unsigned char *p, size_t n) {
  while (n > 0) {
    if (t->rec_left > 0) {
      size_t k = n < t->rec_left ? n : t->rec_left;
      t->rec_left -= k;
      p += k;
      n -= k;
      continue;
    }
    t->rec_hdr[t->rec_hdr_have++] = *p++;
    n--;
    if (t->rec_hdr_have == SSL3_RT_HEADER_LENGTH) {
      t->rec_left = (size_t)t->rec_hdr[3] << 8 | t->rec_hdr[4];
      t->rec_hdr_have = 0;
    }
  }
}

/* ---- The BIO -------------------------------------------------------------- */

static int bio_read(BIO *b, char *out, int outl) {
  keel_tls_t *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (outl <= 0)
    return 0;
  if (t->rlen == 0) {
    if (t->rd_eof)
      return 0;
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = (size_t)outl < t->rlen ? (size_t)outl : t->rlen;
  memcpy(out, t->rbuf + t->rhead, n);
  track_records(t, (const unsigned char *)out, n);
  t->rhead += n;
  t->rlen -= n;
  if (t->rlen == 0)
    t->rhead = 0;
  return (int)n;
}

/* Appends to wbuf what fits. The bytes already there may be on their way
 * to the kernel (an io_uring send reads them): they never move while a
 * flush is under way. */
static int bio_write(BIO *b, const char *in, int inl) {
  keel_tls_t *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (inl <= 0)
    return 0;
  if (!t->wbuf) {
    t->wbuf = keel__tls_buf_take(t->worker, TLS_WBUF_ALLOC);
    if (!t->wbuf)
      return -1;
    t->whead = t->wlen = 0;
  }
  if (t->whead > 0 && !t->flushing) {
    memmove(t->wbuf, t->wbuf + t->whead, t->wlen);
    t->whead = 0;
  }
  size_t room = TLS_WBUF_CAP - t->whead - t->wlen;
  if (room == 0) {
    BIO_set_retry_write(b);
    return -1;
  }
  size_t n = (size_t)inl < room ? (size_t)inl : room;
  memcpy(t->wbuf + t->whead + t->wlen, in, n);
  t->wlen += n;
  return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  keel_tls_t *t = BIO_get_data(b);
  switch (cmd) {
  case BIO_CTRL_FLUSH: /* the stream sends wbuf after each OpenSSL call */
    return 1;
  case BIO_CTRL_EOF:
    return t && t->rd_eof && t->rlen == 0;
  case BIO_CTRL_PENDING:
    return t ? (long)t->rlen : 0;
  case BIO_CTRL_WPENDING:
    return t ? (long)t->wlen : 0;
  default:
    return 0;
  }
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD *keel__tls_bio_method(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "keel-stream");
  if (!m)
    return NULL;
  if (!BIO_meth_set_read(m, bio_read) || !BIO_meth_set_write(m, bio_write) ||
      !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
    BIO_meth_free(m);
    return NULL;
  }
  return m;
}
