/* keel arena: a per-connection or per-request memory pool. Allocations are
 * bump-pointer carves from fixed-size chunks and are never freed one by
 * one; keel_arena_reset frees them all at once (h2o's h2o_mem_pool_t), so
 * parsing a request's headers costs no malloc per header. An arena has one
 * owner (one task) and no locking. */
#ifndef KEEL_ARENA_H
#define KEEL_ARENA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_arena keel_arena_t;

/* The smallest chunk_size keel_arena_open accepts: room for the arena's
 * own header and at least 64 bytes of allocations. */
#define KEEL_ARENA_MIN_CHUNK 256
/* The largest alignment keel_arena_alloc_aligned honours. */
#define KEEL_ARENA_MAX_ALIGN 4096

typedef struct keel_arena_opts {
  /* Bytes of each chunk, its header included; 0: 4 KiB. The first chunk
   * shares one allocation with the arena itself. */
  size_t chunk_size;
  /* The most bytes the arena may hold (keel_arena_held); 0: no limit. An
   * allocation that would take it past this fails. */
  size_t max_bytes;
} keel_arena_opts_t;

/* Creates an arena (one allocation: the arena and its first chunk). opts
 * NULL or zeroed: every default. Returns 0; -EINVAL if chunk_size is below
 * KEEL_ARENA_MIN_CHUNK or above PTRDIFF_MAX, or max_bytes is set and below
 * chunk_size; -ENOMEM. On failure *out is NULL. */
int keel_arena_open(const keel_arena_opts_t *opts, keel_arena_t **out);

/* Returns size bytes aligned for any type (alignof(max_align_t)), valid
 * until the next reset or close; size 0 gives a unique valid pointer.
 * Returns NULL when memory is short, when the arena would hold more than
 * max_bytes, or when size with the arena's few bytes of bookkeeping would
 * pass PTRDIFF_MAX (the largest object C allows; never wraps). Requests
 * larger than a quarter of a chunk's free bytes get a block of their own,
 * freed at reset. */
void *keel_arena_alloc(keel_arena_t *a, size_t size);

/* As keel_arena_alloc, aligned to align; also NULL when align is not a
 * power of two or is larger than KEEL_ARENA_MAX_ALIGN. Alignments below
 * alignof(max_align_t) pack small objects (strings) tighter. */
void *keel_arena_alloc_aligned(keel_arena_t *a, size_t size, size_t align);

/* Returns a copy of the n bytes at p, aligned for any type; NULL as
 * keel_arena_alloc. p may be NULL when n is 0. */
void *keel_arena_memdup(keel_arena_t *a, const void *p, size_t n);

/* Returns a copy of exactly the n bytes at s followed by a NUL (unlike
 * strndup(3), it does not stop at a NUL in s: header values come with a
 * length, not a terminator). NULL as keel_arena_alloc, or if n + 1
 * overflows. s may be NULL when n is 0. */
char *keel_arena_strndup(keel_arena_t *a, const char *s, size_t n);

/* Registers fn(arg) to run at the next reset or close, before any memory
 * is freed (so arg may live in the arena); the last registered runs first.
 * The registration takes a few bytes of the arena. Returns 0, or -ENOMEM
 * (memory short or max_bytes reached: fn will not run). */
int keel_arena_defer(keel_arena_t *a, void (*fn)(void *), void *arg);

/* Runs the deferred callbacks, then frees every large block and every
 * chunk but the first, which is kept so that a connection's next request
 * allocates nothing. Every pointer the arena handed out becomes invalid. */
void keel_arena_reset(keel_arena_t *a);

/* Bytes handed out since the last reset: the sizes asked for, plus the
 * padding that aligned them inside chunks and the deferred registrations. */
size_t keel_arena_used(const keel_arena_t *a);

/* Bytes of memory the arena holds: its chunks (the first one with the
 * arena's header) and its large blocks, their headers included. Right
 * after open or reset this is the chunk size. */
size_t keel_arena_held(const keel_arena_t *a);

/* Resets the arena (running the deferred callbacks) and frees it and
 * everything it holds. Returns 0; NULL is a no-op returning 0. */
int keel_arena_close(keel_arena_t *a);

#ifdef __cplusplus
}
#endif

#endif
