/* peer-common: what the echo peers share and do not compete on: the
 * command line, numeric address parsing, a plain listening socket and the
 * banner tools/bench waits for. Kept apart so a change to any of them lands
 * in every peer at once; each peer's event loop stays in its own file. */
#ifndef PEER_COMMON_H
#define PEER_COMMON_H

#include <sys/socket.h>

/* Deep enough that the benchmark's burst of 10,000 connects is not dropped
 * before the first accept; keel's echo-server listens with the same. */
#define PEER_LISTEN_BACKLOG 4096

/* Reads --host H and --port P into *host and *port, which keep their values
 * when a flag is absent. Returns 0, or -1 after printing usage on stderr (the
 * caller exits 1); on --help prints usage on stdout and exits 0 itself. */
int peer_parse_args(const char *prog, int argc, char **argv, const char **host, int *port);

/* Numeric addresses only: a benchmark must not wait on a resolver. Returns 0
 * with *ss and *len filled in, or -EINVAL when host is neither a numeric IPv4
 * nor IPv6 address. */
int peer_parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len);

/* The address to listen on from the command line: 127.0.0.1:7000 unless
 * --host or --port say otherwise. Returns 0, or -1 after printing why on
 * stderr (the caller exits 1); exits 0 itself on --help. */
int peer_listen_addr(const char *prog, int argc, char **argv, struct sockaddr_storage *ss,
                     socklen_t *len);

/* Returns a close-on-exec socket bound to ss with SO_REUSEADDR and
 * listening, or -errno. sock_flags is ORed into the socket type
 * (SOCK_NONBLOCK, or 0 for a blocking one). */
int peer_open_listener(const struct sockaddr_storage *ss, socklen_t len, int sock_flags);

/* Prints "PROG listening on ADDR:PORT" (IPv6 as [ADDR]:PORT) with the port
 * actually bound, which --port 0 needs, and flushes stdout so a reader on a
 * pipe sees it at once. Returns 0, or -errno from getsockname. */
int peer_announce(const char *prog, int listen_fd);

/* Blocks SIGINT and SIGTERM and returns a close-on-exec signalfd for them
 * (sfd_flags: e.g. SFD_NONBLOCK), or -errno. A loop that waits on it with
 * its sockets has no window between checking a flag and blocking. */
int peer_open_signalfd(int sfd_flags);

#endif
