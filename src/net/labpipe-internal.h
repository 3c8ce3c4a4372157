/* Internal header: the in-memory pipe behind keel_lab_pipe and lab-mode
 * TCP (src/net/labpipe.c, src/net/labnet.c).
 *
 * A pipe is two byte rings, one per direction, and two ends. The pipe and
 * its ends live inside objects of their users' choosing (a keel_lab_pipe
 * allocation, a keel_tcp_t): each says how to free its container. An end
 * is released once it is closed and no task is parked in one of its
 * operations (a parked task still reads it when it wakes); the pipe is
 * released once both ends are. */
#ifndef KEEL_LABPIPE_INTERNAL_H
#define KEEL_LABPIPE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "worker.h"
#include "keel/lab.h"

/* Query key (keel/stream-impl.h) answered by a stream over a pipe: its
 * keel__pipe_t *, so keel_lab_pipe_reset reaches the pipe under layers. */
#define KEEL__STREAM_Q_LAB_PIPE 0x0f01

typedef struct keel__pipe keel__pipe_t;
typedef struct keel__pipe_end keel__pipe_end_t;

typedef struct keel__pipe_dir {
  char *buf;
  size_t head, len; /* bytes queued start at buf[head], wrapping */
  keel__queue_t readers, writers;
  bool write_shut;  /* the writing end shut down or closed: EOF after the bytes */
  bool reader_gone; /* the reading end shut down or closed: writes fail */
} keel__pipe_dir_t;

struct keel__pipe_end {
  keel__pipe_t *pipe;
  int side;    /* writes go to dir[side], reads come from dir[!side] */
  bool closed; /* operations fail with -EBADF; released when parked drops to 0 */
  int parked;  /* tasks waiting inside an operation on this end */
  /* Frees the object the end lives in (NULL: nothing to free). */
  void (*release)(keel__pipe_end_t *e);
};

struct keel__pipe {
  keel__pipe_dir_t dir[2];
  keel_lab_faults_t faults;
  size_t cap;
  keel__worker_t *worker;
  bool reset;
  keel__pipe_end_t *end[2]; /* NULL once released */
  /* Frees the object the pipe lives in, once both ends are released. */
  void (*release)(keel__pipe_t *p);
};

/* Checks faults (-EINVAL: a permille over 1000, a negative delay, a
 * capacity too large). */
int keel__pipe_faults_check(const keel_lab_faults_t *faults);
/* Sets up p (owned by the calling worker) with ends a (side 0) and b (side
 * 1); the caller sets p->release and each end's release. faults may be
 * NULL. Returns 0, -EINVAL or -ENOMEM (nothing to undo then). */
int keel__pipe_init(keel__pipe_t *p, const keel_lab_faults_t *faults, keel__pipe_end_t *a,
                    keel__pipe_end_t *b);

/* The stream operations, on an end (stream-impl.h's contract). */
ssize_t keel__pipe_readv(keel__pipe_end_t *e, const struct iovec *iov, int iovcnt);
ssize_t keel__pipe_writev(keel__pipe_end_t *e, const struct iovec *iov, int iovcnt);
int keel__pipe_shutdown(keel__pipe_end_t *e, int how);
int keel__pipe_wait_readable(keel__pipe_end_t *e);
/* The same in two halves, for a task that gives its stack up while it
 * waits (keel_tcp_park): arm initialises w and starts the wait without
 * parking (w may end at once); done retires it once it has ended and
 * returns 0 or a negative errno (-EBADF: e was closed meanwhile). */
void keel__pipe_arm_readable(keel__pipe_end_t *e, keel__wait_t *w);
int keel__pipe_readable_done(keel__pipe_end_t *e, keel__wait_t *w);
/* Closes e: its parked tasks wake with -EBADF, the peer sees end of stream
 * and its writes fail. e (and then the pipe) may be released before this
 * returns: the caller must not touch either afterwards. */
int keel__pipe_close(keel__pipe_end_t *e);

/* Resets the pipe: every later operation on either end fails with
 * -ECONNRESET, and parked ones wake to see it. */
void keel__pipe_reset(keel__pipe_t *p);
/* Frees p and its ends that are not released yet, whatever their state:
 * only when no task can be parked on them (the runtime is ending). */
void keel__pipe_destroy(keel__pipe_t *p);

#endif
