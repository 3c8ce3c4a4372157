/* Internal header: messages between workers (lock-free MPSC inboxes). */
#ifndef KEEL_MSG_H
#define KEEL_MSG_H

typedef struct keel__worker keel__worker_t;

/* ---- Cross-worker messages (lock-free MPSC) ----------------------------- */

typedef struct keel__msg keel__msg_t;
typedef void (*keel__msg_fn)(keel__worker_t *w, keel__msg_t *m);
struct keel__msg {
  keel__msg_t *next;
  keel__msg_fn fn;
};

/* Posts m to worker w's inbox and wakes w if it sleeps. Any thread. */
void keel__worker_post(keel__worker_t *w, keel__msg_t *m);

#endif
