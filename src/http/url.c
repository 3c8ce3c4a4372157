/* Client URLs: "http://host[:port][/path][?query][#fragment]", the host a
 * name, an IPv4 address or a bracketed IPv6 one. No user info (keel does
 * not send credentials from a URL); the fragment is not sent. */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "client-internal.h"

static bool host_char(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* Request target bytes: visible ASCII (RFC 9112 §3.2). */
static bool target_char(unsigned char ch) { return ch > 0x20 && ch < 0x7f; }

static int parse_port(const char *p, const char *end, uint16_t *out) {
  if (p == end || end - p > 5)
    return -EINVAL;
  unsigned v = 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9')
      return -EINVAL;
    v = v * 10 + (unsigned)(*p - '0');
  }
  if (v == 0 || v > 65535)
    return -EINVAL;
  *out = (uint16_t)v;
  return 0;
}

/* host[:port] in [p, end). */
static int parse_authority(const char *p, const char *end, hc_url_t *u) {
  const char *host_end;
  if (p < end && *p == '[') {
    const char *close = memchr(p, ']', (size_t)(end - p));
    if (!close || close == p + 1)
      return -EINVAL;
    for (const char *q = p + 1; q < close; q++)
      if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') || (*q >= 'A' && *q <= 'F') ||
            *q == ':' || *q == '.'))
        return -EINVAL;
    u->host = p + 1;
    u->host_len = (size_t)(close - p - 1);
    u->ipv6 = true;
    host_end = close + 1;
    if (host_end < end && *host_end != ':')
      return -EINVAL;
  } else {
    host_end = p;
    while (host_end < end && host_char((unsigned char)*host_end))
      host_end++;
    if (host_end == p || (host_end < end && *host_end != ':'))
      return -EINVAL; /* no host, user info ('@'), a bad byte */
    u->host = p;
    u->host_len = (size_t)(host_end - p);
  }
  if (u->host_len > 253)
    return -EINVAL;
  if (host_end < end)
    return parse_port(host_end + 1, end, &u->port);
  return 0;
}

int keel__hc_url_parse(const char *url, hc_url_t *u) {
  memset(u, 0, sizeof *u);
  const char *p = strstr(url, "://");
  if (!p)
    return -EINVAL;
  size_t scheme_len = (size_t)(p - url);
  if (scheme_len == 4 && strncasecmp(url, "http", 4) == 0) {
    u->port = 80;
  } else if (scheme_len == 5 && strncasecmp(url, "https", 5) == 0) {
    u->tls = true;
    u->port = 443;
  } else {
    for (size_t i = 0; i < scheme_len; i++)
      if (!host_char((unsigned char)url[i]) && url[i] != '+')
        return -EINVAL;
    return scheme_len ? -EPROTONOSUPPORT : -EINVAL;
  }
  p += 3;
  const char *auth_end = p + strcspn(p, "/?#");
  int rc = parse_authority(p, auth_end, u);
  if (rc < 0)
    return rc;
  const char *t = auth_end, *t_end = t + strcspn(t, "#");
  for (const char *q = t; q < t_end; q++)
    if (!target_char((unsigned char)*q))
      return -EINVAL;
  u->target = t;
  u->target_len = (size_t)(t_end - t);
  return 0;
}
