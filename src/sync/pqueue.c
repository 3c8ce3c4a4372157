/* Priority channels (KEEL_CHAN_PRIORITY): the channel's buffer holds a
 * binary min-heap of entries ordered by (key, sequence). The sequence is
 * the sending order, so equal keys leave first in, first out, which a heap
 * alone does not keep. Both operations move a hole instead of swapping
 * entries: one copy per level, and no temporary entry (no allocation). */
#include <string.h>

#include "chan-internal.h"

#define HDR_SIZE sizeof(keel__pq_hdr_t)

size_t keel__pq_stride(size_t elem_size) {
  if (elem_size > SIZE_MAX - HDR_SIZE - 7)
    return 0;
  return HDR_SIZE + ((elem_size + 7) & ~(size_t)7);
}

static inline unsigned char *entry(keel_chan_t *c, size_t i) { return c->buf + i * c->stride; }

static inline const keel__pq_hdr_t *hdr(keel_chan_t *c, size_t i) {
  return (const keel__pq_hdr_t *)entry(c, i);
}

static inline bool before(const keel__pq_hdr_t *a, const keel__pq_hdr_t *b) {
  return a->key < b->key || (a->key == b->key && a->seq < b->seq);
}

void keel__pq_push(keel_chan_t *c, int64_t key, const void *item) {
  keel__pq_hdr_t add = {.key = key, .seq = c->next_seq++};
  size_t hole = c->len++;
  while (hole > 0) {
    size_t parent = (hole - 1) / 2;
    if (!before(&add, hdr(c, parent)))
      break;
    memcpy(entry(c, hole), entry(c, parent), c->stride);
    hole = parent;
  }
  memcpy(entry(c, hole), &add, HDR_SIZE);
  memcpy(entry(c, hole) + HDR_SIZE, item, c->elem_size);
}

/* The last entry fills the root's place: the hole sinks towards it while a
 * child comes before it. The last entry (index n) is past every child
 * looked at, so it stays intact until it is moved. */
void keel__pq_pop(keel_chan_t *c, void *item) {
  memcpy(item, entry(c, 0) + HDR_SIZE, c->elem_size);
  size_t n = --c->len;
  if (n == 0)
    return;
  const keel__pq_hdr_t *last = hdr(c, n);
  size_t hole = 0;
  for (;;) {
    size_t child = 2 * hole + 1;
    if (child >= n)
      break;
    if (child + 1 < n && before(hdr(c, child + 1), hdr(c, child)))
      child++;
    if (!before(hdr(c, child), last))
      break;
    memcpy(entry(c, hole), entry(c, child), c->stride);
    hole = child;
  }
  memcpy(entry(c, hole), entry(c, n), c->stride);
}
