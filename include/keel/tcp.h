/* keel TCP: listeners, connections and addresses.
 *
 * In lab mode (keel/lab.h) the same calls run on the lab runtime's
 * in-memory network: listeners, connects and accepts behave as on a
 * loopback interface, with no descriptor and no DNS, and with the faults
 * keel_lab_net_faults sets. The differences a program can see are noted
 * at each call; keel/lab.h has the whole picture. */
#ifndef KEEL_TCP_H
#define KEEL_TCP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core.h"
#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_tcp keel_tcp_t;
typedef struct keel_listener keel_listener_t;

typedef struct keel_addr {
  struct sockaddr_storage ss;
  socklen_t len;
} keel_addr_t;

/* Parses a numeric "host:port", "[v6]:port" or ":port" (any address).
 * Returns 0 or -EINVAL. */
int keel_addr_parse(const char *hostport, keel_addr_t *out);
/* Resolves "host:port" (port numeric; host a name, or a numeric address,
 * which is parsed without resolving) into up to max addresses, in
 * getaddrinfo's order (RFC 6724: gai.conf), IPv4 and IPv6 alike. Names are
 * resolved by getaddrinfo on the blocking pool (keel/blocking.h), so only a
 * task may resolve one; the task parks meanwhile. Returns the number of
 * addresses (1..max) or a negative errno: -EINVAL (malformed, or a name
 * outside a task), -ENOENT no such host (EAI_NONAME, EAI_NODATA,
 * EAI_ADDRFAMILY, or no IPv4/IPv6 address), -EAGAIN temporary failure
 * (EAI_AGAIN), -EIO (EAI_FAIL, unknown codes), -ENOMEM (EAI_MEMORY), the
 * errno of EAI_SYSTEM, -ECANCELED / -ETIMEDOUT (at once, even while
 * getaddrinfo still runs: its result is then freed on the pool). In lab
 * mode a name resolves at once, without DNS, to its lab network address
 * (keel/lab.h): one address, never an error. */
int keel_addr_resolve(const char *hostport, keel_addr_t *out, size_t max);
/* Addresses keel_tcp_connect and keel_tcp_listen try for a host name. */
#define KEEL_RESOLVE_MAX 8

/* Formats as "1.2.3.4:80" / "[::1]:80" into buf. Returns buf. */
char *keel_addr_format(const keel_addr_t *addr, char *buf, size_t len);
#define KEEL_ADDRSTRLEN 64

/* Default accept backlog: Linux's default somaxconn, which also caps it.
 * A burst of thousands of connects overflows a smaller one into resets. */
#define KEEL_LISTEN_BACKLOG 4096

/* Zeroed (or a NULL pointer): every default. */
typedef struct keel_listen_opts {
  int backlog;       /* 0: KEEL_LISTEN_BACKLOG */
  bool no_reuseport; /* no SO_REUSEPORT (default: set, one listener per worker) */
  bool v6only;       /* IPV6_V6ONLY for IPv6 addresses */
} keel_listen_opts_t;

/* Listens on "host:port" (numeric, or a host name: resolved as by
 * keel_addr_resolve, listening on its first address). The listener
 * belongs to the calling worker. Returns 0 or a negative errno (-EINVAL
 * bad address, -EADDRINUSE, keel_addr_resolve's errors...). Lab mode:
 * port 0 counts up from 40000, and a taken address is -EADDRINUSE even
 * with SO_REUSEPORT (one worker); the backlog bounds the connections
 * queued before connects wait. */
int keel_tcp_listen(const char *hostport, const keel_listen_opts_t *opts, keel_listener_t **out);

/* Waits for a connection. Returns 0 and *out, or -ECANCELED/-ETIMEDOUT, or
 * another negative errno (-EBADF: the listener was closed meanwhile).
 * Running out of descriptors (EMFILE/ENFILE) is logged and retried after
 * a short back-off, never returned. */
int keel_tcp_accept(keel_listener_t *l, keel_tcp_t **out);
/* Whether an error of keel_tcp_accept concerns one connection (it aborted,
 * a firewall refused it, memory is short for a moment: accept again, after
 * a short pause for -ENOBUFS / -ENOMEM) rather than the listener. */
bool keel_tcp_accept_error_transient(int err);

/* Local address of the listener (e.g. to learn an ephemeral port): its
 * keel_addr_format string connects to it, in lab mode too. */
int keel_listener_addr(const keel_listener_t *l, keel_addr_t *out);
/* Closes and frees the listener; tasks parked in keel_tcp_accept wake with
 * -EBADF. Connections queued and not accepted are reset (lab mode: always;
 * a real backend resets those still in the kernel's queue). */
int keel_listener_close(keel_listener_t *l);

/* Connects to "host:port" under the task's deadline. A numeric address is
 * parsed at once; a host name is resolved first (keel_addr_resolve, on the
 * blocking pool) and its addresses (at most KEEL_RESOLVE_MAX) are tried in
 * order until one connects: sequentially, no happy eyeballs, so an address
 * that hangs holds up the rest until the deadline. Returns 0 and *out, or
 * a negative errno: a resolution error, or the last address's error
 * (-ECONNREFUSED...); -ECANCELED / -ETIMEDOUT end the attempts at once.
 * Lab mode: -ECONNREFUSED at once when nobody listens there; refusals
 * and hangs as keel_lab_net_faults draws them; beyond the listener's
 * backlog the connect waits for an accept. */
int keel_tcp_connect(const char *hostport, keel_tcp_t **out);
int keel_tcp_connect_addr(const keel_addr_t *addr, keel_tcp_t **out);

/* The stream interface of a connection (keel_read, keel_write, ...). */
keel_stream_t *keel_tcp_stream(keel_tcp_t *c);
/* The socket; -1 in lab mode, where there is none. */
/* The socket (-1 in lab mode). Reading it directly bypasses keel: on
 * io_uring, after keel_stream_wait_readable or keel_tcp_park, up to 16 KiB
 * may already be in keel's buffer, delivered by the next keel_read. */
int keel_tcp_fd(const keel_tcp_t *c);
int keel_tcp_local_addr(const keel_tcp_t *c, keel_addr_t *out);
int keel_tcp_peer_addr(const keel_tcp_t *c, keel_addr_t *out);
/* Sets TCP_NODELAY (on by default). 0 or a negative errno; lab mode holds
 * nothing back, so there it does nothing and returns 0. */
int keel_tcp_set_nodelay(keel_tcp_t *c, bool on);
/* Hands the rest of the calling task to its worker until c is readable:
 * the task gives its stack back to the worker's pool and holds no buffer,
 * so an idle connection costs only its own structs (a few hundred bytes,
 * not a stack). When bytes, end of stream or an error arrive — or the
 * task's deadline passes (keel_task_set_deadline: the idle timeout), or its
 * scope is cancelled — the task goes on in fn(arg) on a fresh stack: the
 * same task (scope, name, handle, per-task deadline), as if fn had been
 * spawned. fn learns why from its first call on c (a read returns the
 * bytes, 0, -ETIMEDOUT or -ECANCELED). The idle connection still belongs
 * to its scope: a join waits for it, and cancelling the scope wakes it so
 * that fn closes it.
 * While the task is parked, keel_tcp_close(c) from another task is refused
 * with -EBUSY (the wait lives in c): end a parked connection by cancelling
 * its task's scope, and fn closes it.
 * Does not return when it succeeds: call it as `return keel_tcp_park(...)`
 * with nothing on the stack that fn needs (fn gets only arg). Returns
 * -EINVAL (no task, fn NULL), -EXDEV (c belongs to another worker), or
 * -EBUSY if the task has a scope open or is inside a shield, or another
 * task is parked on c. */
int keel_tcp_park(keel_tcp_t *c, keel_task_fn fn, void *arg);
/* Same as keel_close(keel_tcp_stream(c)); -EBUSY (nothing done) while a
 * task is parked on c (keel_tcp_park). */
int keel_tcp_close(keel_tcp_t *c);

#ifdef __cplusplus
}
#endif
#endif
