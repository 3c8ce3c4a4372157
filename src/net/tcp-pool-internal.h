/* Internal header: what a pool of idle TCP connections (the HTTP client's,
 * src/http/pool.c) needs of them that the stream interface cannot say
 * (src/net/tcp-pool.c). */
#ifndef KEEL_TCP_POOL_INTERNAL_H
#define KEEL_TCP_POOL_INTERNAL_H

#include "keel/tcp.h"

/* Whether a read of the idle connection c would return at once (bytes,
 * end of stream, a reset), asked without waiting and without taking
 * anything: 1 if so, 0 if a read would park, -EXDEV from another worker.
 * An idle keep-alive connection that answers 1 was closed by its peer or
 * got bytes nobody asked for: it must not carry another request. Works on
 * a socket and on a lab connection alike. */
int keel__tcp_readable_now(keel_tcp_t *c);

/* Frees a socket connection left open once its worker's loop has ended
 * (a worker slot's destroy, on any thread): closes the descriptor and
 * frees c, without the loop. Not for a lab connection (keel_tcp_fd -1):
 * the lab network frees those itself, maybe already. */
void keel__tcp_free_stopped(keel_tcp_t *c);

#endif
