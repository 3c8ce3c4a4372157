/* keel watch: one fixed-size value that senders replace and receivers
 * read; receivers see the latest value (values replaced before a receiver
 * looked are skipped) and can wait for a newer one. Senders and receivers
 * may be tasks on different workers (sending never blocks: any thread may
 * send). */
#ifndef KEEL_WATCH_H
#define KEEL_WATCH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_watch keel_watch_t;
/* One receiver: the version it saw last, used by one task at a time. */
typedef struct keel_watch_rx keel_watch_rx_t;

/* Creates a watch holding a copy of initial (elem_size bytes; NULL: zero
 * bytes), as its version 0. One allocation. Returns 0, -EINVAL (elem_size
 * 0) or -ENOMEM. */
int keel_watch_open(size_t elem_size, const void *initial, keel_watch_t **out);

/* Shuts the watch down (if needed) and gives up the opener's handle: w must not be used
 * afterwards. The memory goes when the last receiver unsubscribes too, so
 * receivers on other workers may still read the last value. NULL is a
 * no-op. */
void keel_watch_close(keel_watch_t *w);

/* Replaces the value with a copy of value (a new version) and wakes every
 * receiver waiting in changed/recv. Never blocks; any thread. Returns the
 * number of receivers subscribed, or -EPIPE once closed (value unchanged). */
int keel_watch_send(keel_watch_t *w, const void *value);

/* Shuts down (stops sending): sends fail with -EPIPE, waiting receivers wake with -EPIPE (once
 * they have seen the last version); the last value stays readable. Any
 * thread. Shutting down twice is a no-op. Returns 0. */
int keel_watch_shutdown(keel_watch_t *w);

/* Copies the current value out, for whoever holds w (no receiver needed). */
void keel_watch_load(keel_watch_t *w, void *value);

/* Subscribes: the current version counts as seen by the new receiver, so
 * changed waits for the next send. Allowed after close (the last value is
 * still readable). Any thread. Returns 0 or -ENOMEM. */
int keel_watch_subscribe(keel_watch_t *w, keel_watch_rx_t **out);

/* Frees the receiver (no task may be blocked on it). NULL is a no-op. */
void keel_watch_unsubscribe(keel_watch_rx_t *rx);

/* Copies the latest value out and marks it seen. Never blocks; any thread
 * (works after close). Returns 1 if it was newer than the receiver's last
 * seen version, 0 if the receiver had seen it. */
int keel_watch_get(keel_watch_rx_t *rx, void *value);

/* Waits until a version newer than the receiver's last seen one exists
 * (returns at once if one does); does not mark it seen (keel_watch_get
 * does). Task only. Returns 0; -EPIPE if closed and the receiver has seen
 * the last version; -ECANCELED or -ETIMEDOUT; -EINVAL if it would have to
 * wait outside a task. */
int keel_watch_changed(keel_watch_rx_t *rx);

/* As keel_watch_changed but never blocks: 1 if a newer version exists,
 * 0 if not, -EPIPE if closed and the last version was seen. Any thread. */
int keel_watch_has_changed(keel_watch_rx_t *rx);

/* keel_watch_changed, then keel_watch_get in the same step: waits for a
 * newer version, copies the latest value out and marks it seen. Task only.
 * Returns 0; -EPIPE, -ECANCELED, -ETIMEDOUT or -EINVAL (outside a task)
 * with nothing copied. */
int keel_watch_recv(keel_watch_rx_t *rx, void *value);

/* Receivers subscribed now. */
size_t keel_watch_receivers(keel_watch_t *w);

#ifdef __cplusplus
}
#endif
#endif
