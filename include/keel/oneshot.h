/* keel oneshot: one fixed-size value, handed once from one sender to one
 * receiver, which may be tasks on different workers (the sender may be any
 * thread). */
#ifndef KEEL_ONESHOT_H
#define KEEL_ONESHOT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One object with two ends. The sender end is finished by exactly one call
 * of keel_oneshot_send or keel_oneshot_drop_sender; the receiver end by
 * exactly one call of keel_oneshot_drop_receiver (after recv, or instead of
 * it). The object is freed when both ends are finished, by whichever call
 * finishes the second end: after its own call an end must not touch the
 * object again. */
typedef struct keel_oneshot keel_oneshot_t;

/* Creates a oneshot for values of elem_size bytes (one allocation).
 * Returns 0, -EINVAL (elem_size 0) or -ENOMEM. */
int keel_oneshot_open(size_t elem_size, keel_oneshot_t **out);

/* Copies the value in and finishes the sender end. Never blocks; any
 * thread. Returns 0 when the value is handed over (a waiting receiver
 * wakes), or -EPIPE when the receiver end is already finished: the value
 * was not taken. Either way the sender end is finished. */
int keel_oneshot_send(keel_oneshot_t *o, const void *value);

/* Finishes the sender end without sending: the receiver gets -EPIPE.
 * Never blocks; any thread. */
void keel_oneshot_drop_sender(keel_oneshot_t *o);

/* Waits for the value and copies it out (task only; one receiving task).
 * Returns 0; -EPIPE if the sender end finished without sending, or the
 * value was already received; -ECANCELED or -ETIMEDOUT (nothing taken:
 * the value, if it comes, stays for a later recv); -EINVAL if it would
 * have to wait outside a task. */
int keel_oneshot_recv(keel_oneshot_t *o, void *value);

/* As keel_oneshot_recv but never blocks: -EAGAIN while nothing was sent
 * and the sender end is not finished. Any thread. */
int keel_oneshot_try_recv(keel_oneshot_t *o, void *value);

/* Finishes the receiver end: a value not received is discarded, a later
 * send returns -EPIPE. No task may be blocked in recv on it. */
void keel_oneshot_drop_receiver(keel_oneshot_t *o);

#ifdef __cplusplus
}
#endif
#endif
