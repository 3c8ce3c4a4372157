/* keel lab mode: a deterministic runtime for tests of timing-dependent
 * code, in-memory stream pairs and an in-memory TCP network, with fault
 * injection.
 *
 * Run with cfg.backend = KEEL_BACKEND_LAB (or KEEL_BACKEND=lab):
 *   - one worker (cfg.workers > 1 is -EINVAL);
 *   - a virtual clock: keel_now_ns, sleeps, deadlines and timers use it.
 *     Time stands still while tasks run and jumps to the next timer when
 *     every task is blocked, so an hour of backoff takes milliseconds and
 *     each deadline is met to the nanosecond;
 *   - a seeded scheduler: the next ready task is drawn from a generator
 *     seeded by cfg.lab_seed, else KEEL_SEED, else 1; keel_random draws from
 *     the same generator. The same seed gives the same run, as long as the
 *     program itself is deterministic (no real threads, no real I/O);
 *   - a trace: spawns, task runs, clock jumps and the lab network's
 *     listens, connects (with their outcome) and accepts are folded into a hash
 *     (keel_lab_trace_hash, cfg.lab_trace), so two runs can be compared;
 *   - a failed run (keel_run returning a negative errno) logs its seed;
 *   - an in-memory network: keel_tcp_listen, keel_tcp_accept and
 *     keel_tcp_connect work without sockets (below), so a program runs
 *     unchanged on io_uring, epoll and lab mode. No real descriptor is
 *     driven: other operations on one fail with -EOPNOTSUPP. Blocking-pool
 *     functions run on real threads; virtual time does not wait for them
 *     unless nothing else is armed, so keep them out of tests that need
 *     exact times.
 * If every task is blocked with no timer armed, lab mode waits for another
 * thread and after one real second logs the blocked tasks (a deadlock). */
#ifndef KEEL_LAB_H
#define KEEL_LAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* True in a task of a lab runtime. */
bool keel_lab_active(void);
/* The lab runtime's seed (0 outside lab mode). */
uint64_t keel_lab_seed(void);
/* Hash of the scheduling events so far, and their number (0 outside). */
uint64_t keel_lab_trace_hash(void);
uint64_t keel_lab_trace_events(void);
/* Folds a value of the program's own into the trace (no-op outside). */
void keel_lab_trace_note(uint64_t value);

/* Faults a lab pipe injects, drawn from keel_random. Zero: none. */
typedef struct keel_lab_faults {
  size_t capacity;         /* bytes buffered per direction; 0: 64 KiB */
  int64_t delay_max_ns;    /* each write first waits a random [0, max] ns */
  unsigned short_permille; /* chance (per 1000) a read or write moves only part */
  unsigned reset_permille; /* chance (per 1000) an operation resets the pair */
} keel_lab_faults_t;

/* Creates two connected in-memory streams owned by the calling worker
 * (any backend; other workers get -EXDEV). What is written to one is read
 * from the other, through keel_read/keel_write/keel_close like TCP:
 * reads return 0 after the peer shuts down writing, writes fail with
 * -EPIPE once the peer stopped reading, a reset makes every later call on
 * either end fail with -ECONNRESET, and blocked calls honour cancellation
 * and deadlines without losing bytes. Close both ends to free the pair.
 * faults may be NULL. Returns 0, -EINVAL (a permille over 1000, a negative
 * delay, outside a worker) or -ENOMEM. */
int keel_lab_pipe(const keel_lab_faults_t *faults, keel_stream_t **a, keel_stream_t **b);

/* Resets the pair s belongs to, as an injected fault would: s is a lab
 * pipe, a lab-mode TCP connection's stream, or a layer over either.
 * Returns 0, -EINVAL (no lab pipe under s) or -EXDEV. */
int keel_lab_pipe_reset(keel_stream_t *s);

/* ---- The lab network ---------------------------------------------------------
 * In lab mode keel/tcp.h runs on an in-memory network of the runtime's
 * own (nothing is shared between runtimes, nothing touches the host):
 *
 *   - keel_tcp_listen registers the listener under its address. Any
 *     address works: numeric ("127.0.0.1:8080", "[::1]:80", ":80") or a
 *     host name ("db:5432"). There is no DNS: "localhost" is 127.0.0.1,
 *     any other name gets an address of its own in 198.18.0.0/15, in the
 *     order names are first seen (keel_addr_resolve answers the same), so
 *     the listener's address formats as e.g. "198.18.0.1:5432" and both
 *     strings reach it. Port 0 takes the next free port counting up from
 *     40000 (the same ports on every run). A listener on the wildcard
 *     address takes connects to any host on its port; an IPv6 one IPv4
 *     connects too, unless v6only. A second listener on a taken address
 *     (the same host and port, or a wildcard on that port) is
 *     -EADDRINUSE: one worker has no SO_REUSEPORT group to join.
 *   - keel_tcp_connect reaches the listener on that address (if none,
 *     -ECONNREFUSED at once) and queues the server's end of a lab pipe on
 *     its accept queue; it returns as soon as the connection is queued, as
 *     a handshake completes before accept. Beyond the listener's backlog
 *     the connect waits, as unanswered SYNs do, until an accept makes room
 *     (or its deadline, cancellation, or the listener's close:
 *     -ECONNREFUSED). The client's local address is on the host it
 *     dialled (one machine, as over loopback) with a port counting up
 *     from 49152; the server's local address is the one dialled.
 *   - keel_tcp_accept takes the oldest queued connection, or waits.
 *     keel_listener_close wakes accepters with -EBADF and resets the
 *     queued connections (their clients' calls fail with -ECONNRESET).
 *   - A connection's stream behaves as a lab pipe's (keel_lab_pipe above)
 *     and answers KEEL_STREAM_Q_PEER_ADDR / LOCAL_ADDR / WORKER;
 *     KEEL_STREAM_Q_FD is -ENOTSUP and keel_tcp_fd -1; TCP_NODELAY reads
 *     as 1 and setting it does nothing (keel_tcp_set_nodelay returns 0).
 *     Its transport name (KEEL_STREAM_Q_TRANSPORT) is "tcp".
 *   - What the program leaves open (listeners, connections, queued ones)
 *     is freed when the runtime ends. */

/* Faults of the lab network, drawn from keel_random (so the seed replays
 * them). Zero: none. */
typedef struct keel_lab_net_faults {
  unsigned refuse_permille; /* a connect fails with -ECONNREFUSED */
  unsigned hang_permille;   /* a connect waits for its deadline (-ETIMEDOUT) or
                               cancellation; without either it hangs for good */
  unsigned drop_permille;   /* each operation on a connection resets it, as a
                               network dropping it would (-ECONNRESET on both ends) */
  /* Faults of every connection's pipe: capacity per direction, delays,
   * short reads and writes. Its reset_permille must be 0: drops are
   * drop_permille. */
  keel_lab_faults_t conn;
} keel_lab_net_faults_t;

/* Sets the lab network's faults (NULL: none) for the connects that follow
 * and the connections they make; connections already made keep theirs.
 * Only a connect that reaches a listener draws (refused or hanging), and
 * draws once. Call from a task of a lab runtime. Returns 0, -EINVAL
 * (outside lab mode, a permille over 1000, refuse_permille +
 * hang_permille over 1000, conn.reset_permille set, bad conn faults) or
 * -ENOMEM. */
int keel_lab_net_faults(const keel_lab_net_faults_t *faults);

#ifdef __cplusplus
}
#endif
#endif
