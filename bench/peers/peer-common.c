/* peer-common: the command line, address and banner code every echo peer
 * shares; see peer-common.h. */
#include "peer-common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static void usage(const char *prog, FILE *out) {
  fprintf(out,
          "usage: %s [--host H] [--port P]\n"
          "  --host H  numeric IPv4 or IPv6 address to listen on (default 127.0.0.1)\n"
          "  --port P  port, 0 = any free one (default 7000)\n",
          prog);
}

int peer_parse_args(const char *prog, int argc, char **argv, const char **host, int *port) {
  static const struct option longopts[] = {{"host", required_argument, NULL, 'H'},
                                           {"port", required_argument, NULL, 'p'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  int opt;
  while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    char *end;
    long v;
    switch (opt) {
    case 'H':
      *host = optarg;
      break;
    case 'p':
      errno = 0;
      v = strtol(optarg, &end, 10);
      if (errno != 0 || end == optarg || *end != '\0' || v < 0 || v > 65535)
        goto bad;
      *port = (int)v;
      break;
    case 'h':
      usage(prog, stdout);
      exit(0);
    default:
      goto bad;
    }
  }
  if (optind == argc)
    return 0;
bad:
  usage(prog, stderr);
  return -1;
}

int peer_parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *sin = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    *len = sizeof *sin;
    return 0;
  }
  if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    *len = sizeof *sin6;
    return 0;
  }
  return -EINVAL;
}

int peer_listen_addr(const char *prog, int argc, char **argv, struct sockaddr_storage *ss,
                     socklen_t *len) {
  const char *host = "127.0.0.1";
  int port = 7000;
  if (peer_parse_args(prog, argc, argv, &host, &port) < 0)
    return -1;
  if (peer_parse_addr(host, port, ss, len) < 0) {
    fprintf(stderr, "%s: --host %s: not a numeric IPv4 or IPv6 address\n", prog, host);
    return -1;
  }
  return 0;
}

int peer_open_listener(const struct sockaddr_storage *ss, socklen_t len, int sock_flags) {
  int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | sock_flags, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, PEER_LISTEN_BACKLOG) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

int peer_announce(const char *prog, int listen_fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(listen_fd, (struct sockaddr *)&ss, &len) < 0)
    return -errno;
  char text[INET6_ADDRSTRLEN];
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
    printf("%s listening on [%s]:%u\n", prog, text, ntohs(sin6->sin6_port));
  } else {
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    printf("%s listening on %s:%u\n", prog, text, ntohs(sin->sin_port));
  }
  fflush(stdout);
  return 0;
}

int peer_open_signalfd(int sfd_flags) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
    return -errno;
  int fd = signalfd(-1, &mask, sfd_flags | SFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}
