/* Numeric socket addresses: "host:port", "[v6]:port", ":port". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "keel/tcp.h"

static int parse_port(const char *s, in_port_t *out) {
  if (!*s || strlen(s) > 5)
    return -EINVAL;
  unsigned long v = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9')
      return -EINVAL;
    v = v * 10 + (unsigned long)(*p - '0');
  }
  if (v > 65535)
    return -EINVAL;
  *out = htons((in_port_t)v);
  return 0;
}

static int parse_v6(const char *host, size_t hlen, in_port_t port, keel_addr_t *out) {
  char buf[INET6_ADDRSTRLEN];
  if (hlen >= sizeof buf)
    return -EINVAL;
  memcpy(buf, host, hlen);
  buf[hlen] = '\0';
  struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&out->ss;
  memset(sa, 0, sizeof *sa);
  if (inet_pton(AF_INET6, buf, &sa->sin6_addr) != 1)
    return -EINVAL;
  sa->sin6_family = AF_INET6;
  sa->sin6_port = port;
  out->len = sizeof *sa;
  return 0;
}

static int parse_v4(const char *host, size_t hlen, in_port_t port, keel_addr_t *out) {
  char buf[INET_ADDRSTRLEN];
  struct sockaddr_in *sa = (struct sockaddr_in *)&out->ss;
  memset(sa, 0, sizeof *sa);
  if (hlen == 0) {
    sa->sin_addr.s_addr = htonl(INADDR_ANY);
  } else {
    if (hlen >= sizeof buf)
      return -EINVAL;
    memcpy(buf, host, hlen);
    buf[hlen] = '\0';
    if (inet_pton(AF_INET, buf, &sa->sin_addr) != 1)
      return -EINVAL;
  }
  sa->sin_family = AF_INET;
  sa->sin_port = port;
  out->len = sizeof *sa;
  return 0;
}

int keel_addr_parse(const char *hostport, keel_addr_t *out) {
  if (!hostport || !out)
    return -EINVAL;
  memset(out, 0, sizeof *out);
  const char *colon = strrchr(hostport, ':');
  if (!colon)
    return -EINVAL;
  in_port_t port;
  if (parse_port(colon + 1, &port) < 0)
    return -EINVAL;
  if (hostport[0] == '[') {
    if (colon == hostport || colon[-1] != ']')
      return -EINVAL;
    return parse_v6(hostport + 1, (size_t)(colon - hostport) - 2, port, out);
  }
  if (memchr(hostport, ':', (size_t)(colon - hostport)))
    return -EINVAL; /* bare IPv6 needs brackets */
  return parse_v4(hostport, (size_t)(colon - hostport), port, out);
}

char *keel_addr_format(const keel_addr_t *addr, char *buf, size_t len) {
  char host[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (addr->ss.ss_family == AF_INET) {
    const struct sockaddr_in *sa = (const struct sockaddr_in *)&addr->ss;
    inet_ntop(AF_INET, &sa->sin_addr, host, sizeof host);
    port = ntohs(sa->sin_port);
    snprintf(buf, len, "%s:%u", host, port);
  } else if (addr->ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *sa = (const struct sockaddr_in6 *)&addr->ss;
    inet_ntop(AF_INET6, &sa->sin6_addr, host, sizeof host);
    port = ntohs(sa->sin6_port);
    snprintf(buf, len, "[%s]:%u", host, port);
  } else {
    snprintf(buf, len, "?");
  }
  return buf;
}
