/* TLS streams: OpenSSL over any keel stream.
 *
 * OpenSSL runs over keel's BIO (bio.c), which never blocks: when OpenSSL
 * wants ciphertext that is not there, the task reads the inner stream
 * (parking there) and calls OpenSSL again; what OpenSSL writes collects in
 * wbuf, and the task sends it before its op returns. So one task reading
 * and another writing can share the stream: neither is inside OpenSSL
 * while it is parked, and a reader waiting for bytes holds up no writer.
 *
 * Who sends wbuf: the task that filled it, unless another task is sending
 * it already (`flushing`): that one sends what was added meanwhile too.
 * A writer that finds a send under way waits for it (t->waiters), as do
 * tasks that find a handshake under way.
 *
 * A task parked in the inner stream comes back to t, which another task
 * may have closed meanwhile: t counts such tasks (`parked`), and the last
 * one out frees it (as the buffered stream does). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls-internal.h"
#include "wait.h"

static const keel_stream_ops_t tls_ops;

/* ---- Life ------------------------------------------------------------------ */

static void tls_free(keel_tls_t *t) {
  SSL_free(t->ssl); /* and the BIO */
  t->rlen = t->wlen = 0;
  t->reading = t->flushing = t->writing = false;
  keel__tls_bufs_settle(t);
  free(t->session_key);
  free(t->alpn);
  keel_tls_ctx_close(t->ctx);
  free(t);
}

/* Leaving an op that may have parked: -EBADF if t was closed meanwhile
 * (the last task out frees it), else rc. */
static ssize_t op_leave(keel_tls_t *t, ssize_t rc, bool *role) {
  t->parked--;
  if (t->closed) {
    if (t->parked == 0)
      tls_free(t);
    return -EBADF;
  }
  if (role)
    *role = false;
  keel__tls_bufs_settle(t);
  return rc;
}

static int fail(keel_tls_t *t, int rc) {
  if (!t->failed)
    t->failed = rc;
  return rc;
}

/* Waits for the handshake or a send under way to end. */
static int wait_turn(keel_tls_t *t) {
  int rc = keel__check_cancel();
  if (rc < 0)
    return rc;
  keel__wait_t w;
  keel__wait_init(&w, keel__wait_abort_dequeue, KEEL__WAIT_TLS, t);
  keel__queue_insert_tail(&t->waiters, &w.node);
  rc = (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
  return t->closed ? -EBADF : rc;
}

/* ---- Sending ---------------------------------------------------------------- */

static void drop_output(keel_tls_t *t) {
  t->wlen = 0;
  t->whead = 0;
}

/* Sends wbuf to the inner stream; the caller is not `flushing`. A send
 * cut short by cancellation leaves the records unsent only when none of
 * them went out and they are not the caller's (own: bytes of a write that
 * will report them as written): they go with the next send. Otherwise it
 * finishes them inside a shield of KEEL_TLS_FLUSH_SHIELD_MS; if even that
 * fails, or the inner stream fails, the writing side is poisoned. */
static int flush_out(keel_tls_t *t, bool own) {
  if (t->wlen == 0)
    return 0;
  if (t->super.wr_poison) {
    drop_output(t);
    return t->super.wr_poison;
  }
  t->flushing = true;
  bool sent = false, shielded = false;
  int rc = 0;
  while (t->wlen > 0) {
    ssize_t n = keel_write(t->super.inner, t->wbuf + t->whead, t->wlen);
    if (t->closed)
      break;
    if (n > 0) {
      t->whead += (size_t)n;
      t->wlen -= (size_t)n;
      sent = true;
      continue;
    }
    if ((n == -ECANCELED || n == -ETIMEDOUT) && !shielded && (sent || own)) {
      keel_shield_begin(keel_now_ns() + KEEL_TLS_FLUSH_SHIELD_MS * KEEL_NS_PER_MS);
      shielded = true;
      continue;
    }
    rc = (int)n;
    break;
  }
  if (shielded)
    keel_shield_end();
  if (t->closed)
    return -EBADF;
  t->flushing = false;
  keel__waiters_wake_all(&t->waiters, 0);
  if (t->wlen == 0) {
    t->whead = 0;
    return 0;
  }
  if ((rc == -ECANCELED || rc == -ETIMEDOUT) && !sent && !own && !shielded)
    return rc; /* nothing went out: the records wait, whole, for the next send */
  if (shielded || rc == -ECANCELED || rc == -ETIMEDOUT) {
    keel__tls_set_reason(t, "a cancelled write left a TLS record half sent");
    rc = -ENOTRECOVERABLE;
  }
  drop_output(t);
  keel_stream_poison(&t->super, SHUT_WR, rc);
  return rc;
}

/* Sends what is pending, after the send under way (if any) ends. */
static int flush_wait(keel_tls_t *t) {
  while (t->flushing) {
    int rc = wait_turn(t);
    if (rc < 0)
      return rc;
  }
  return flush_out(t, false);
}

/* ---- Receiving ---------------------------------------------------------------- */

/* Reads more ciphertext into rbuf. Sends our pending records first: the
 * peer may be waiting for them (a handshake flight). With nothing
 * buffered and the inner stream drained, it waits for readability before
 * taking a buffer, and when `idle` also gives OpenSSL's buffers back
 * meanwhile. Returns 1 (bytes), 0 (the inner stream ended) or an errno. */
static int read_more(keel_tls_t *t, bool idle) {
  if (t->rd_eof)
    return 0;
  if (t->wlen > 0 && !t->flushing) {
    int rc = flush_out(t, false);
    if (rc < 0)
      return rc;
  }
  if (t->rlen == 0 && t->rd_drained) {
    if (idle)
      (void)SSL_free_buffers(t->ssl);
    keel__tls_bufs_settle(t);
    int rc = keel_stream_wait_readable(t->super.inner);
    if (t->closed)
      return -EBADF;
    if (rc < 0 && rc != -ENOTSUP)
      return rc;
  }
  if (!t->rbuf) {
    if (!(t->rbuf = keel__tls_buf_take(t->worker, TLS_RBUF_CAP)))
      return -ENOMEM;
    t->rhead = t->rlen = 0;
  } else if (t->rhead > 0) {
    memmove(t->rbuf, t->rbuf + t->rhead, t->rlen);
    t->rhead = 0;
  }
  size_t room = TLS_RBUF_CAP - t->rlen;
  t->reading = true;
  ssize_t n = keel_read(t->super.inner, t->rbuf + t->rlen, room);
  if (t->closed)
    return -EBADF;
  t->reading = false;
  if (n > 0) {
    t->rlen += (size_t)n;
    t->rd_drained = (size_t)n < room;
    return 1;
  }
  if (n == 0) {
    t->rd_eof = true;
    return 0;
  }
  return (int)n;
}

/* ---- Handshake ---------------------------------------------------------------- */

/* kTLS seam: once the handshake is done, a stream whose bottom is a TCP
 * socket could hand the traffic keys to the kernel (TCP_ULP "tls", then
 * TLS_TX / TLS_RX) and send and receive records straight through the
 * socket. Not done: the kernels keel is tested on have no tls ULP, and a
 * path that cannot run here would be untested. */
static void tls_offload(keel_tls_t *t) { (void)t; }

static void handshake_done(keel_tls_t *t) {
  const unsigned char *p;
  unsigned len;
  SSL_get0_alpn_selected(t->ssl, &p, &len);
  if (len > 0 && (t->alpn = malloc(len + 1)) != NULL) {
    memcpy(t->alpn, p, len);
    t->alpn[len] = '\0';
  }
  t->hs_state = HS_DONE;
  tls_offload(t);
}

static int handshake_failed(keel_tls_t *t, int ssl_err) {
  int rc;
  if (t->rd_eof && t->alert_received < 0 && ERR_GET_LIB(ERR_peek_last_error()) != ERR_LIB_X509 &&
      SSL_get_verify_result(t->ssl) == X509_V_OK) {
    ERR_clear_error();
    keel__tls_set_reason(t, "the peer closed the connection during the handshake");
    rc = -ECONNRESET;
  } else {
    rc = keel__tls_error(t, ssl_err);
  }
  /* The alert OpenSSL queued goes out if it can without waiting long. */
  if (t->wlen > 0 && !t->flushing && keel_cancelled() == KEEL_CANCEL_NONE)
    (void)flush_out(t, false);
  return fail(t, rc);
}

static int handshake_loop(keel_tls_t *t) {
  for (;;) {
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1)
      return 0;
    int e = SSL_get_error(t->ssl, r);
    int rc;
    if (e == SSL_ERROR_WANT_READ)
      rc = read_more(t, false);
    else if (e == SSL_ERROR_WANT_WRITE)
      rc = flush_out(t, false);
    else
      return handshake_failed(t, e);
    if (rc < 0)
      return rc;
  }
}

/* Runs the handshake, or waits for the one another task runs. Our last
 * flight may stay in wbuf: the next send takes it along (a client's
 * Finished leaves with its first request). */
static int handshake_run(keel_tls_t *t) {
  while (t->hs_state == HS_RUNNING) {
    int rc = wait_turn(t);
    if (rc < 0)
      return rc;
  }
  if (t->failed)
    return t->failed;
  if (t->hs_state == HS_DONE)
    return 0;
  t->hs_state = HS_RUNNING;
  int64_t prev = 0;
  bool timed = t->hs_deadline_ns > 0;
  if (timed) {
    prev = keel_task_set_deadline(t->hs_deadline_ns);
    if (prev > 0 && prev < t->hs_deadline_ns)
      keel_task_set_deadline(prev);
  }
  int rc = handshake_loop(t);
  if (timed)
    keel_task_set_deadline(prev);
  if (t->closed)
    return -EBADF;
  if (rc == -ETIMEDOUT) {
    keel__tls_set_reason(t, "handshake timeout");
    fail(t, rc);
  }
  if (rc == 0)
    handshake_done(t);
  else if (t->hs_state == HS_RUNNING)
    t->hs_state = HS_NONE;
  keel__tls_count_handshake(t->ctx->server, rc, rc == 0 && SSL_session_reused(t->ssl));
  keel__waiters_wake_all(&t->waiters, 0);
  return rc;
}

int keel_tls_handshake(keel_tls_t *t) {
  if (!t)
    return -EINVAL;
  if (keel__worker_current() != t->worker)
    return -EXDEV;
  if (t->failed)
    return t->failed;
  t->parked++;
  int rc = handshake_run(t);
  if (rc == 0 && t->wlen > 0)
    rc = flush_wait(t);
  return (int)op_leave(t, rc, NULL);
}

/* ---- Reading -------------------------------------------------------------------- */

/* SSL_read gave no bytes and wants nothing: the end, or a failure. */
static ssize_t read_end(keel_tls_t *t, int e) {
  if (e == SSL_ERROR_ZERO_RETURN || (t->rd_eof && e == SSL_ERROR_SYSCALL)) {
    ERR_clear_error();
    if (t->peer_closed)
      return 0;
    if (t->rec_left > 0 || t->rec_hdr_have > 0 || t->rlen > 0) {
      keel__tls_set_reason(t, "truncated: the stream ended inside a TLS record");
      return fail(t, -EPROTO);
    }
    return 0; /* ended between records without close_notify: an ordinary end */
  }
  return fail(t, keel__tls_error(t, e));
}

/* Reads into the iovecs: parks only until the first bytes, then takes
 * what OpenSSL has without parking. */
static ssize_t read_loop(keel_tls_t *t, const struct iovec *iov, int iovcnt) {
  size_t done = 0, off = 0;
  int i = 0;
  while (i < iovcnt) {
    if (off == iov[i].iov_len) {
      i++;
      off = 0;
      continue;
    }
    size_t got = 0;
    ERR_clear_error();
    if (SSL_read_ex(t->ssl, (char *)iov[i].iov_base + off, iov[i].iov_len - off, &got)) {
      done += got;
      off += got;
      continue;
    }
    int e = SSL_get_error(t->ssl, 0);
    if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && done > 0)
      break;
    int rc;
    if (e == SSL_ERROR_WANT_READ)
      rc = read_more(t, false);
    else if (e == SSL_ERROR_WANT_WRITE)
      rc = flush_wait(t);
    else if (done > 0)
      return (void)read_end(t, e), (ssize_t)done; /* the next read has the end */
    else
      return read_end(t, e);
    if (rc < 0)
      return rc;
  }
  /* What reading made OpenSSL say (a key update's answer) goes out now,
   * unless a writer is at it. */
  if (t->wlen > 0 && !t->flushing && !t->writing)
    (void)flush_out(t, false);
  return (ssize_t)done;
}

static ssize_t tls_readv(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  keel_tls_t *t = (keel_tls_t *)s;
  if (keel__worker_current() != t->worker)
    return -EXDEV;
  if (t->failed)
    return t->failed;
  if (t->reader)
    return -EBUSY;
  t->reader = true;
  t->parked++;
  ssize_t rc = t->hs_state == HS_DONE ? 0 : handshake_run(t);
  if (rc == 0)
    rc = read_loop(t, iov, iovcnt);
  return op_leave(t, rc, &t->reader);
}

/* Waits until OpenSSL has plaintext (or the end, or an error) for a read,
 * holding no buffer of keel's meanwhile and, between messages, none of
 * OpenSSL's. */
static int wait_plaintext(keel_tls_t *t) {
  for (;;) {
    unsigned char c;
    size_t n;
    ERR_clear_error();
    if (SSL_peek_ex(t->ssl, &c, 1, &n))
      return 0;
    int e = SSL_get_error(t->ssl, 0);
    int rc;
    if (e == SSL_ERROR_WANT_READ)
      rc = read_more(t, true);
    else if (e == SSL_ERROR_WANT_WRITE)
      rc = flush_wait(t);
    else
      return (void)read_end(t, e), 0; /* the read returns it at once */
    if (rc < 0)
      return rc;
  }
}

static int tls_wait_readable(keel_stream_t *s) {
  keel_tls_t *t = (keel_tls_t *)s;
  if (keel__worker_current() != t->worker)
    return -EXDEV;
  if (t->failed || t->reader || (t->hs_state == HS_DONE && SSL_pending(t->ssl) > 0))
    return 0;
  t->reader = true;
  t->parked++;
  int rc = t->hs_state == HS_DONE ? 0 : handshake_run(t);
  if (rc == 0)
    rc = wait_plaintext(t);
  return (int)op_leave(t, rc, &t->reader);
}

int keel_tls_idle(keel_tls_t *t) {
  if (!t)
    return -EINVAL;
  if (t->hs_state != HS_DONE || t->reader || t->writing || t->flushing || t->rlen > 0 ||
      t->wlen > 0 || SSL_has_pending(t->ssl))
    return -EBUSY;
  (void)SSL_free_buffers(t->ssl);
  keel__tls_bufs_settle(t);
  return 0;
}

void keel__tls_free_stopped(keel_tls_t *t) {
  free(t->rbuf);
  free(t->wbuf);
  t->rbuf = t->wbuf = NULL;
  tls_free(t);
}

/* ---- Writing -------------------------------------------------------------------- */

/* The next piece of the caller's bytes for one record, from (*i, *off):
 * a whole record's worth straight from the caller's memory when one iovec
 * has it (or it is the last), else small pieces gathered into the stage. */
static size_t next_piece(keel_tls_t *t, const struct iovec *iov, int iovcnt, int i, size_t off,
                         const void **ptr) {
  while (i < iovcnt && off == iov[i].iov_len) {
    i++;
    off = 0;
  }
  if (i == iovcnt)
    return 0;
  size_t left = iov[i].iov_len - off;
  bool last = true;
  for (int j = i + 1; j < iovcnt && last; j++)
    last = iov[j].iov_len == 0;
  if (left >= TLS_STAGE_CAP || last) {
    *ptr = (const char *)iov[i].iov_base + off;
    return left < TLS_STAGE_CAP ? left : TLS_STAGE_CAP;
  }
  char *stage = t->wbuf + TLS_WBUF_CAP;
  size_t n = 0;
  for (; i < iovcnt && n < TLS_STAGE_CAP; i++, off = 0) {
    size_t k = iov[i].iov_len - off;
    if (k > TLS_STAGE_CAP - n)
      k = TLS_STAGE_CAP - n;
    memcpy(stage + n, (const char *)iov[i].iov_base + off, k);
    n += k;
  }
  *ptr = stage;
  return n;
}

static void advance(const struct iovec *iov, int iovcnt, int *i, size_t *off, size_t n) {
  while (n > 0 && *i < iovcnt) {
    size_t k = iov[*i].iov_len - *off;
    if (n < k) {
      *off += n;
      return;
    }
    n -= k;
    (*i)++;
    *off = 0;
  }
}

/* Encrypts as many records as wbuf holds, then sends them. */
static ssize_t write_some(keel_tls_t *t, const struct iovec *iov, int iovcnt) {
  if (TLS_WBUF_CAP - t->wlen < TLS_RECORD_MAX) {
    int rc = flush_out(t, false);
    if (rc < 0)
      return rc;
  }
  if (!t->wbuf) {
    if (!(t->wbuf = keel__tls_buf_take(t->worker, TLS_WBUF_ALLOC)))
      return -ENOMEM;
    t->whead = t->wlen = 0;
  }
  size_t total = 0, off = 0;
  int i = 0;
  while (TLS_WBUF_CAP - t->whead - t->wlen >= TLS_RECORD_MAX) {
    const void *ptr;
    size_t n = next_piece(t, iov, iovcnt, i, off, &ptr);
    if (n == 0)
      break;
    size_t w = 0;
    ERR_clear_error();
    if (!SSL_write_ex(t->ssl, ptr, n, &w)) {
      int e = SSL_get_error(t->ssl, 0);
      if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
        break;
      int rc = fail(t, keel__tls_error(t, e));
      if (total == 0)
        return rc;
      break;
    }
    total += w;
    advance(iov, iovcnt, &i, &off, w);
  }
  int rc = flush_out(t, total > 0);
  return rc < 0 ? rc : (ssize_t)total;
}

static ssize_t tls_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  keel_tls_t *t = (keel_tls_t *)s;
  if (keel__worker_current() != t->worker)
    return -EXDEV;
  if (t->failed)
    return t->failed;
  if (t->writing)
    return -EBUSY;
  t->writing = true;
  t->parked++;
  ssize_t rc = t->hs_state == HS_DONE ? 0 : handshake_run(t);
  if (rc == 0)
    rc = keel__check_cancel();
  while (rc == 0 && t->flushing)
    rc = wait_turn(t);
  if (rc == 0)
    rc = write_some(t, iov, iovcnt);
  return op_leave(t, rc, &t->writing);
}

/* ---- Shutdown, close, queries ----------------------------------------------- */

/* Writes close_notify into wbuf, once, after a completed handshake. */
static void queue_close_notify(keel_tls_t *t) {
  if (t->hs_state != HS_DONE || t->shutdown_sent || t->failed || t->super.wr_poison)
    return;
  t->shutdown_sent = true;
  ERR_clear_error();
  (void)SSL_shutdown(t->ssl);
  ERR_clear_error();
}

static int tls_shutdown(keel_stream_t *s, int how) {
  keel_tls_t *t = (keel_tls_t *)s;
  if (keel__worker_current() != t->worker)
    return -EXDEV;
  if (how == SHUT_RD)
    return keel_stream_shutdown(s->inner, how);
  t->parked++;
  queue_close_notify(t);
  int rc = flush_wait(t);
  if (rc == 0 && !t->closed)
    rc = keel_stream_shutdown(s->inner, how);
  return (int)op_leave(t, rc, NULL);
}

/* close_notify and what is still unsent go out under the caller's
 * deadlines (a cancelled task sends what it can without waiting); the
 * peer's close_notify is not awaited. */
static int tls_close(keel_stream_t *s) {
  keel_tls_t *t = (keel_tls_t *)s;
  if (keel__worker_current() != t->worker)
    return -EXDEV;
  t->parked++;
  int rc = 0;
  if (!t->closed) {
    queue_close_notify(t);
    if (t->wlen > 0 && !t->flushing)
      rc = flush_out(t, false);
  }
  if (!t->closed) {
    t->closed = true;
    keel__waiters_wake_all(&t->waiters, -EBADF);
    int rc2 = keel_close(s->inner);
    if (rc == 0 || rc == -ECANCELED || rc == -ETIMEDOUT)
      rc = rc2;
  }
  if (--t->parked == 0)
    tls_free(t);
  return rc;
}

static int tls_query(keel_stream_t *s, int what, void *arg, size_t len) {
  if (what != KEEL_STREAM_Q_TLS)
    return -ENOTSUP;
  if (len != sizeof(keel_tls_t *))
    return -EINVAL;
  *(keel_tls_t **)arg = (keel_tls_t *)s;
  return 0;
}

static const keel_stream_ops_t tls_ops = {
    .name = "tls",
    .readv = tls_readv,
    .writev = tls_writev,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .query = tls_query,
    .wait_readable = tls_wait_readable,
};

/* ---- Opening ------------------------------------------------------------------- */

static bool is_ip(const char *name) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

static int setup_client(keel_tls_t *t, const keel_tls_opts_t *o) {
  const char *name = o->server_name;
  if (name && !is_ip(name) && !SSL_set_tlsext_host_name(t->ssl, name))
    return -EINVAL;
  if (name && t->ctx->verify) {
    SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = is_ip(name) ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name)
                         : SSL_set1_host(t->ssl, name);
    if (!ok)
      return -EINVAL;
  }
  if (o->alpn && o->alpn[0]) {
    unsigned char *wire;
    size_t len;
    if (keel__tls_alpn_wire(o->alpn, &wire, &len) < 0)
      return -EINVAL;
    int bad = SSL_set_alpn_protos(t->ssl, wire, (unsigned)len);
    free(wire);
    if (bad)
      return -ENOMEM;
  }
  const char *key = o->session_key ? o->session_key : name;
  if (t->ctx->sessions && key) {
    if (!(t->session_key = strdup(key)))
      return -ENOMEM;
    SSL_SESSION *sess = keel__tls_session_get(t->ctx, key);
    if (sess) {
      (void)SSL_set_session(t->ssl, sess);
      SSL_SESSION_free(sess);
    }
  }
  SSL_set_connect_state(t->ssl);
  return 0;
}

int keel_tls_open(keel_tls_ctx_t *ctx, keel_stream_t *inner, const keel_tls_opts_t *opts,
                  keel_tls_t **out) {
  static const keel_tls_opts_t none = {0};
  const keel_tls_opts_t *o = opts ? opts : &none;
  keel__worker_t *w = keel__worker_current();
  if (out)
    *out = NULL;
  if (!ctx || !inner || !out || !w || (!ctx->server && ctx->verify && !o->server_name))
    return -EINVAL;
  int worker_id;
  if (keel_stream_query(inner, KEEL_STREAM_Q_WORKER, &worker_id, sizeof worker_id) == 0 &&
      worker_id != w->id)
    return -EXDEV;
  keel_tls_t *t = calloc(1, sizeof *t);
  if (!t)
    return -ENOMEM;
  keel_stream_init(&t->super, &tls_ops, inner);
  keel__queue_init(&t->waiters);
  t->ctx = ctx;
  t->worker = w;
  t->rd_drained = true;
  t->alert_received = t->alert_sent = -1;
  t->ssl = SSL_new(ctx->ssl);
  BIO *bio = t->ssl ? BIO_new(ctx->bio_method) : NULL;
  if (!bio) {
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return -ENOMEM;
  }
  BIO_set_data(bio, t);
  SSL_set_bio(t->ssl, bio, bio);
  SSL_set_app_data(t->ssl, t);
  keel__tls_ctx_hold(ctx);
  int rc = 0;
  if (ctx->server)
    SSL_set_accept_state(t->ssl);
  else
    rc = setup_client(t, o);
  if (rc < 0) {
    ERR_clear_error();
    t->super.inner = NULL;
    tls_free(t);
    return rc;
  }
  if (ctx->handshake_timeout_ns > 0)
    t->hs_deadline_ns = keel_now_ns() + ctx->handshake_timeout_ns;
  *out = t;
  return 0;
}

keel_stream_t *keel_tls_stream(keel_tls_t *t) { return t ? &t->super : NULL; }

keel_tls_t *keel_tls_of(keel_stream_t *s) {
  keel_tls_t *t = NULL;
  if (!s || keel_stream_query(s, KEEL_STREAM_Q_TLS, &t, sizeof t) < 0)
    return NULL;
  return t;
}

const char *keel_tls_reason(const keel_tls_t *t) { return t ? t->reason : ""; }

int keel_tls_info(const keel_tls_t *t, keel_tls_info_t *info) {
  if (!t || !info)
    return -EINVAL;
  memset(info, 0, sizeof *info);
  bool done = t->hs_state == HS_DONE;
  info->version = done ? SSL_get_version(t->ssl) : NULL;
  info->cipher = done ? SSL_get_cipher_name(t->ssl) : NULL;
  info->alpn = t->alpn;
  info->server_name = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
  info->resumed = done && SSL_session_reused(t->ssl);
  info->peer_cert =
      done && SSL_get0_peer_certificate(t->ssl) && SSL_get_verify_result(t->ssl) == X509_V_OK;
  info->peer_closed = t->peer_closed;
  info->alert_received = t->alert_received;
  return 0;
}

int keel_tls_peer_subject(const keel_tls_t *t, char *buf, size_t len) {
  X509 *x = t ? SSL_get0_peer_certificate(t->ssl) : NULL;
  if (!x)
    return -ENOENT;
  BIO *mem = BIO_new(BIO_s_mem());
  if (!mem)
    return -ENOMEM;
  X509_NAME_print_ex(mem, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
  char *p;
  long n = BIO_get_mem_data(mem, &p);
  int rc = n >= 0 && (size_t)n < len ? (int)n : -ENOSPC;
  if (rc >= 0) {
    memcpy(buf, p, (size_t)n);
    buf[n] = '\0';
  }
  BIO_free(mem);
  return rc;
}
