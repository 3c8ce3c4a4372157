/* Arena: bump allocation in fixed-size chunks, large requests in blocks of
 * their own, everything freed at once by reset or close.
 *
 * The arena's header and its first chunk are one allocation, and reset
 * keeps that chunk: a connection that resets its arena between requests
 * allocates nothing for a request that fits in it. A request larger than a
 * quarter of a chunk gets its own block, so that one big value neither
 * wastes the rest of a chunk nor forces chunks to be sized for it.
 *
 * Under ASan the free part of every chunk (and the slack of every block)
 * is poisoned and each allocation unpoisoned to its exact size, so an
 * access past an arena allocation is reported as one past a malloc'd
 * block would be, instead of landing silently in a neighbour. */
#include <assert.h>
#include <errno.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel-config.h"
#include "keel/arena.h"

#if KEEL_ASAN
#include <sanitizer/asan_interface.h>
/* Out of line because GCC takes the const pointer argument for a read of
 * the bytes and warns (-Wmaybe-uninitialized) when they are fresh from
 * malloc, which is exactly when they are poisoned. */
__attribute__((noinline)) static void poison(void *addr, size_t size) {
  __asan_poison_memory_region(addr, size);
}
__attribute__((noinline)) static void unpoison(void *addr, size_t size) {
  __asan_unpoison_memory_region(addr, size);
}
#else
static inline void poison(void *addr, size_t size) { (void)addr, (void)size; }
static inline void unpoison(void *addr, size_t size) { (void)addr, (void)size; }
#endif

#define DEFAULT_CHUNK_SIZE 4096
#define MAX_ALIGN alignof(max_align_t)
#define ALIGN_UP(n, align) (((n) + (align)-1) & ~((size_t)(align)-1))

/* A chunk after the first; its size is the arena's chunk_size. */
typedef struct arena_chunk {
  struct arena_chunk *next; /* the chunk allocated before it */
} arena_chunk_t;

/* A large request's own allocation. */
typedef struct arena_block {
  struct arena_block *next;
  size_t bytes; /* malloc'd, this header included: what held counts */
} arena_block_t;

typedef struct arena_defer {
  struct arena_defer *next;
  void (*fn)(void *);
  void *arg;
} arena_defer_t;

struct keel_arena {
  char *cur; /* the current chunk's free bytes are cur .. end */
  char *end;
  arena_chunk_t *chunks; /* chunks after the first, newest first */
  arena_block_t *blocks; /* large blocks, newest first */
  arena_defer_t *defers; /* newest first: the order they run in */
  size_t chunk_size;
  size_t max_bytes;   /* SIZE_MAX when unlimited */
  size_t large_limit; /* a size or alignment above this gets a block */
  size_t used;
  size_t held;
};

/* Each header is padded so that what follows it is aligned for any type. */
#define ARENA_HDR ALIGN_UP(sizeof(struct keel_arena), MAX_ALIGN)
#define CHUNK_HDR ALIGN_UP(sizeof(arena_chunk_t), MAX_ALIGN)
#define BLOCK_HDR ALIGN_UP(sizeof(arena_block_t), MAX_ALIGN)

static_assert(ARENA_HDR + 64 <= KEEL_ARENA_MIN_CHUNK, "the smallest chunk has 64 free bytes");
/* large_limit is a quarter of the first chunk's room, the smallest any
 * chunk has; a request within it, with its worst alignment padding, takes
 * under half of that room, so it always fits in a fresh chunk. */
static_assert(CHUNK_HDR <= ARENA_HDR, "later chunks have at least the first one's room");

static bool within_limit(const keel_arena_t *a, size_t bytes) {
  return bytes <= a->max_bytes - a->held; /* held never exceeds max_bytes */
}

int keel_arena_open(const keel_arena_opts_t *opts, keel_arena_t **out) {
  *out = NULL;
  keel_arena_opts_t o = opts ? *opts : (keel_arena_opts_t){0};
  size_t chunk_size = o.chunk_size ? o.chunk_size : DEFAULT_CHUNK_SIZE;
  size_t max_bytes = o.max_bytes ? o.max_bytes : SIZE_MAX;
  /* A chunk's free bytes are measured as a pointer difference. */
  if (chunk_size < KEEL_ARENA_MIN_CHUNK || chunk_size > PTRDIFF_MAX || max_bytes < chunk_size)
    return -EINVAL;
  keel_arena_t *a = malloc(chunk_size);
  if (!a)
    return -ENOMEM;
  *a = (keel_arena_t){
      .chunk_size = chunk_size,
      .max_bytes = max_bytes,
      .large_limit = (chunk_size - ARENA_HDR) / 4,
  };
  keel_arena_reset(a); /* points cur at the first chunk, poisons it */
  *out = a;
  return 0;
}

/* Takes size bytes at align from the current chunk; NULL if they do not
 * fit in what is left of it. */
static void *carve(keel_arena_t *a, size_t size, size_t align) {
  size_t pad = (size_t)(-(uintptr_t)a->cur & (align - 1));
  size_t room = (size_t)(a->end - a->cur);
  if (pad > room || size > room - pad)
    return NULL;
  char *p = a->cur + pad;
  a->cur = p + size;
  a->used += pad + size;
  unpoison(p, size);
  return p;
}

/* Makes a fresh chunk the current one. What was left of the previous one
 * stays unused until reset: the request did not fit there. */
static int add_chunk(keel_arena_t *a) {
  if (!within_limit(a, a->chunk_size))
    return -ENOMEM;
  arena_chunk_t *c = malloc(a->chunk_size);
  if (!c)
    return -ENOMEM;
  c->next = a->chunks;
  a->chunks = c;
  a->held += a->chunk_size;
  a->cur = (char *)c + CHUNK_HDR;
  a->end = (char *)c + a->chunk_size;
  poison(a->cur, (size_t)(a->end - a->cur));
  return 0;
}

/* A request above large_limit, in a block of its own. malloc aligns for
 * any type, so only a larger alignment needs slack to move the start. */
static void *alloc_large(keel_arena_t *a, size_t size, size_t align) {
  size_t slack = align > MAX_ALIGN ? align - 1 : 0;
  size_t bytes;
  /* No object may be larger than PTRDIFF_MAX, the block included. */
  if (__builtin_add_overflow(size, BLOCK_HDR + slack, &bytes) || bytes > PTRDIFF_MAX ||
      !within_limit(a, bytes))
    return NULL;
  arena_block_t *b = malloc(bytes);
  if (!b)
    return NULL;
  b->bytes = bytes;
  b->next = a->blocks;
  a->blocks = b;
  a->held += bytes;
  a->used += size;
  char *p = (char *)ALIGN_UP((uintptr_t)b + BLOCK_HDR, align);
  poison((char *)b + BLOCK_HDR, bytes - BLOCK_HDR);
  unpoison(p, size);
  return p;
}

void *keel_arena_alloc_aligned(keel_arena_t *a, size_t size, size_t align) {
  if (align == 0 || (align & (align - 1)) != 0 || align > KEEL_ARENA_MAX_ALIGN)
    return NULL;
  if (size == 0)
    size = 1; /* a unique pointer: it takes a byte */
  if (size > a->large_limit || align > a->large_limit)
    return alloc_large(a, size, align);
  void *p = carve(a, size, align);
  if (!p && add_chunk(a) == 0)
    p = carve(a, size, align);
  return p;
}

void *keel_arena_alloc(keel_arena_t *a, size_t size) {
  return keel_arena_alloc_aligned(a, size, MAX_ALIGN);
}

void *keel_arena_memdup(keel_arena_t *a, const void *p, size_t n) {
  void *copy = keel_arena_alloc(a, n);
  if (copy && n > 0)
    memcpy(copy, p, n);
  return copy;
}

char *keel_arena_strndup(keel_arena_t *a, const char *s, size_t n) {
  if (n == SIZE_MAX)
    return NULL; /* no room for the NUL */
  char *copy = keel_arena_alloc_aligned(a, n + 1, 1);
  if (!copy)
    return NULL;
  if (n > 0)
    memcpy(copy, s, n);
  copy[n] = '\0';
  return copy;
}

int keel_arena_defer(keel_arena_t *a, void (*fn)(void *), void *arg) {
  assert(fn != NULL);
  arena_defer_t *d = keel_arena_alloc_aligned(a, sizeof *d, alignof(arena_defer_t));
  if (!d)
    return -ENOMEM;
  *d = (arena_defer_t){.next = a->defers, .fn = fn, .arg = arg};
  a->defers = d;
  return 0;
}

/* Callbacks run before anything is freed, so their arguments may live in
 * the arena. Popped one at a time: one that registers another during the
 * reset has it run too, not lost. */
static void run_defers(keel_arena_t *a) {
  while (a->defers) {
    arena_defer_t *d = a->defers;
    a->defers = d->next;
    d->fn(d->arg);
  }
}

/* Unpoisoned before free: the allocator may hand the memory to code that
 * does not know it was poisoned. */
static void free_chunks_and_blocks(keel_arena_t *a) {
  while (a->blocks) {
    arena_block_t *b = a->blocks;
    a->blocks = b->next;
    unpoison(b, b->bytes);
    free(b);
  }
  while (a->chunks) {
    arena_chunk_t *c = a->chunks;
    a->chunks = c->next;
    unpoison(c, a->chunk_size);
    free(c);
  }
}

void keel_arena_reset(keel_arena_t *a) {
  run_defers(a);
  free_chunks_and_blocks(a);
  a->cur = (char *)a + ARENA_HDR;
  a->end = (char *)a + a->chunk_size;
  a->used = 0;
  a->held = a->chunk_size;
  poison(a->cur, (size_t)(a->end - a->cur));
}

size_t keel_arena_used(const keel_arena_t *a) { return a->used; }

size_t keel_arena_held(const keel_arena_t *a) { return a->held; }

int keel_arena_close(keel_arena_t *a) {
  if (!a)
    return 0;
  keel_arena_reset(a);
  unpoison((char *)a + ARENA_HDR, a->chunk_size - ARENA_HDR);
  free(a);
  return 0;
}
