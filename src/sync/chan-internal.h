/* Private header: a channel's state, shared by chan.c (the channel) and
 * pqueue.c (the binary heap of a KEEL_CHAN_PRIORITY channel). */
#ifndef KEEL_CHAN_INTERNAL_H
#define KEEL_CHAN_INTERNAL_H

#include <stdint.h>

#include "worker.h"
#include "keel/chan.h"

struct keel_chan {
  keel__spinlock_t lock; /* KEEL_CHAN_SHARED: guards every field below but flags */
  unsigned flags;        /* fixed at open: read without the lock */
  keel_chan_order_t order;
  keel_chan_policy_t policy;
  bool closed;
  keel__worker_t *owner; /* not shared: NULL until first used, if opened outside a worker */
  unsigned char *buf;
  size_t elem_size;
  size_t stride;   /* bytes per buffer slot: elem_size, or a heap entry */
  size_t capacity; /* slots */
  size_t head;     /* FIFO/LIFO ring: index of the oldest item; heap: 0 */
  size_t len;      /* items queued */
  size_t reserved; /* slots held by keel_chan_reserve */
  size_t dropped;
  uint64_t next_seq;          /* priority: sending order, so equal keys stay FIFO */
  keel__queue_t send_waiters; /* tasks waiting for room */
  keel__queue_t recv_waiters; /* tasks waiting for an item */
};

/* A heap entry: this header, then the item at an 8-byte aligned offset. */
typedef struct keel__pq_hdr {
  int64_t key;
  uint64_t seq;
} keel__pq_hdr_t;

/* Bytes per heap entry for items of elem_size (0 on overflow). */
size_t keel__pq_stride(size_t elem_size);
/* Adds item with key (the buffer has room); len grows by one. */
void keel__pq_push(keel_chan_t *c, int64_t key, const void *item);
/* Removes the smallest entry (len > 0) and copies its item out. */
void keel__pq_pop(keel_chan_t *c, void *item);

#endif
