/* The router: method + exact path, or method + longest path prefix. A
 * handful of routes is the common case, so a linear scan over an array
 * is the whole structure. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http-internal.h"

typedef struct route {
  char *method; /* NULL: any */
  char *path;
  size_t path_len;
  bool prefix;
  keel_http_handler_fn handler;
  void *ctx;
} route_t;

struct keel_http_router {
  route_t *routes;
  size_t n, cap;
};

int keel_http_router_open(keel_http_router_t **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : -ENOMEM;
}

int keel_http_router_close(keel_http_router_t *r) {
  if (!r)
    return 0;
  for (size_t i = 0; i < r->n; i++) {
    free(r->routes[i].method);
    free(r->routes[i].path);
  }
  free(r->routes);
  free(r);
  return 0;
}

static bool same_method(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

int keel_http_route(keel_http_router_t *r, const char *method, const char *path, unsigned flags,
                    keel_http_handler_fn handler, void *ctx) {
  if (!r || !path || path[0] != '/' || !handler || (flags & ~KEEL_HTTP_ROUTE_PREFIX))
    return -EINVAL;
  bool prefix = flags & KEEL_HTTP_ROUTE_PREFIX;
  for (size_t i = 0; i < r->n; i++)
    if (r->routes[i].prefix == prefix && strcmp(r->routes[i].path, path) == 0 &&
        same_method(r->routes[i].method, method))
      return -EEXIST;
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 8;
    route_t *p = realloc(r->routes, cap * sizeof *p);
    if (!p)
      return -ENOMEM;
    r->routes = p;
    r->cap = cap;
  }
  route_t rt = {.path = strdup(path),
                .path_len = strlen(path),
                .prefix = prefix,
                .handler = handler,
                .ctx = ctx};
  rt.method = method ? strdup(method) : NULL;
  if (!rt.path || (method && !rt.method)) {
    free(rt.path);
    free(rt.method);
    return -ENOMEM;
  }
  r->routes[r->n++] = rt;
  return 0;
}

static bool method_matches(const route_t *rt, const char *m) {
  if (!rt->method || strcmp(rt->method, m) == 0)
    return true;
  return strcmp(m, "HEAD") == 0 && strcmp(rt->method, "GET") == 0;
}

/* How well rt matches path: -1 not at all, else a rank (exact beats every
 * prefix; a longer prefix beats a shorter). */
static long path_rank(const route_t *rt, const char *path, size_t len) {
  if (!rt->prefix)
    return len == rt->path_len && memcmp(path, rt->path, len) == 0 ? (long)SIZE_MAX / 2 : -1;
  return len >= rt->path_len && memcmp(path, rt->path, rt->path_len) == 0 ? (long)rt->path_len : -1;
}

static int not_allowed(const keel_http_router_t *r, keel_http_response_t *res, long rank,
                       const char *path, size_t len) {
  char allow[256];
  size_t n = 0;
  for (size_t i = 0; i < r->n; i++) {
    const route_t *rt = &r->routes[i];
    size_t ml = rt->method ? strlen(rt->method) : 0;
    if (path_rank(rt, path, len) != rank || !rt->method || n + ml + 2 >= sizeof allow)
      continue;
    if (n)
      allow[n++] = ',', allow[n++] = ' ';
    memcpy(allow + n, rt->method, ml);
    n += ml;
  }
  allow[n] = '\0';
  keel_http_set_status(res, 405);
  keel_http_add_header(res, "Allow", allow);
  keel_http_add_header(res, "Content-Type", "text/plain");
  return keel_http_send(res, "Method Not Allowed\n", 19);
}

int keel_http_router_handler(keel_http_request_t *req, keel_http_response_t *res, void *router) {
  const keel_http_router_t *r = router;
  const char *path = keel_http_path(req), *method = keel_http_method(req);
  size_t len = strlen(path);
  const route_t *best = NULL;
  long best_rank = -1, path_best = -1;
  for (size_t i = 0; i < r->n; i++) {
    long rank = path_rank(&r->routes[i], path, len);
    if (rank > path_best)
      path_best = rank;
    if (rank > best_rank && method_matches(&r->routes[i], method)) {
      best = &r->routes[i];
      best_rank = rank;
    }
  }
  if (best)
    return best->handler(req, res, best->ctx);
  if (path_best >= 0)
    return not_allowed(r, res, path_best, path, len);
  keel_http_set_status(res, 404);
  keel_http_add_header(res, "Content-Type", "text/plain");
  return keel_http_send(res, "Not Found\n", 10);
}
