/* Socket addresses: numeric "host:port", "[v6]:port", ":port", parsed here;
 * host names resolved by getaddrinfo on the blocking pool. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocking-internal.h"
#include "worker.h"
#include "keel/tcp.h"
#include "tcp-internal.h"

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

/* ---- Host names: getaddrinfo on the blocking pool ----------------------------- */

#define RESOLVE_HOST_MAX 256 /* a DNS name is at most 253 characters */

/* The job's data: input (host, port), output (rc, list). */
typedef struct resolve_job {
  char host[RESOLVE_HOST_MAX];
  char port[8];
  int gai_rc;
  int sys_errno; /* for EAI_SYSTEM */
  struct addrinfo *list;
} resolve_job_t;

/* Without AI_ADDRCONFIG: glibc does not count loopback as configured, so a
 * host with only loopback would get no address for "localhost". Addresses
 * of a family the host cannot reach fail fast at connect instead, and the
 * next one is tried. */
static void resolve_fn(void *data) {
  resolve_job_t *job = data;
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
  job->gai_rc = getaddrinfo(job->host, job->port, &hints, &job->list);
  job->sys_errno = errno;
}

static void resolve_dispose(void *data) {
  resolve_job_t *job = data;
  if (job->list)
    freeaddrinfo(job->list);
}

/* EAI_* to a negative errno (documented at keel_addr_resolve). */
static int gai_errno(int gai_rc, int sys_errno) {
  switch (gai_rc) {
  case EAI_NONAME:
  case EAI_NODATA:
  case EAI_ADDRFAMILY:
    return -ENOENT;
  case EAI_AGAIN:
    return -EAGAIN;
  case EAI_MEMORY:
    return -ENOMEM;
  case EAI_SYSTEM:
    return sys_errno > 0 ? -sys_errno : -EIO;
  case EAI_SERVICE:
  case EAI_SOCKTYPE:
  case EAI_FAMILY:
  case EAI_BADFLAGS:
    return -EINVAL;
  default: /* EAI_FAIL and anything new */
    return -EIO;
  }
}

/* Splits "host:port" or "[host]:port" into job's host and port. */
static int split_hostport(const char *hostport, resolve_job_t *job) {
  const char *colon = strrchr(hostport, ':');
  in_port_t port;
  if (!colon || parse_port(colon + 1, &port) < 0)
    return -EINVAL;
  const char *host = hostport;
  size_t hlen = (size_t)(colon - hostport);
  if (hlen >= 2 && host[0] == '[' && colon[-1] == ']') {
    host++;
    hlen -= 2;
  }
  if (hlen == 0 || hlen >= sizeof job->host || memchr(host, '[', hlen) || memchr(host, ']', hlen))
    return -EINVAL;
  memcpy(job->host, host, hlen);
  job->host[hlen] = '\0';
  snprintf(job->port, sizeof job->port, "%s", colon + 1);
  return 0;
}

int keel_addr_resolve(const char *hostport, keel_addr_t *out, size_t max) {
  if (!hostport || !out || max == 0)
    return -EINVAL;
  if (keel_addr_parse(hostport, &out[0]) == 0)
    return 1;
  resolve_job_t job = {.list = NULL};
  int rc = split_hostport(hostport, &job);
  if (rc < 0)
    return rc;
  keel__worker_t *w = keel__worker_current();
  if (w && w->virtual_time) { /* no DNS in lab mode: names are the lab network's */
    in_port_t port;
    parse_port(job.port, &port);
    return keel__labnet_resolve(job.host, port, out);
  }
  rc = keel__blocking_run_as(KEEL__WAIT_RESOLVE, resolve_fn, &job, sizeof job, resolve_dispose);
  if (rc < 0)
    return rc;
  if (job.gai_rc != 0) {
    resolve_dispose(&job);
    return gai_errno(job.gai_rc, job.sys_errno);
  }
  size_t n = 0;
  for (struct addrinfo *ai = job.list; ai && n < max; ai = ai->ai_next) {
    if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
        ai->ai_addrlen > sizeof out[n].ss)
      continue;
    memset(&out[n], 0, sizeof out[n]);
    memcpy(&out[n].ss, ai->ai_addr, ai->ai_addrlen);
    out[n].len = ai->ai_addrlen;
    n++;
  }
  resolve_dispose(&job);
  return n > 0 ? (int)n : -ENOENT;
}
