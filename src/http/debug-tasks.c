/* GET /debug/tasks: the task dump (keel_tasks_write) over HTTP, text by
 * default, JSON when asked for. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keel/http.h"

/* The dump, collected whole so that the response has a Content-Length. */
typedef struct collected {
  char *data;
  size_t len, cap;
} collected_t;

static int collect(void *arg, const char *data, size_t len) {
  collected_t *c = arg;
  if (c->len + len > c->cap) {
    size_t cap = c->cap ? c->cap : 4096;
    while (cap < c->len + len)
      cap *= 2;
    char *p = realloc(c->data, cap);
    if (!p)
      return -ENOMEM;
    c->data = p;
    c->cap = cap;
  }
  memcpy(c->data + c->len, data, len);
  c->len += len;
  return 0;
}

/* The value of key in a query string ("a=1&format=json"), or NULL; *len
 * gets its length. */
static const char *query_value(const char *query, const char *key, size_t *len) {
  size_t klen = strlen(key);
  for (const char *p = query; p && *p;) {
    size_t n = strcspn(p, "&");
    if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
      *len = n - klen - 1;
      return p + klen + 1;
    }
    p += n + (p[n] == '&');
  }
  return NULL;
}

/* ?format=json or ?format=text decides; else an Accept field that names
 * application/json asks for JSON. */
static bool wants_json(const keel_http_request_t *req) {
  size_t len;
  const char *format = query_value(keel_http_query(req), "format", &len);
  if (format)
    return len == 4 && strncmp(format, "json", 4) == 0;
  const char *accept = keel_http_header(req, "Accept");
  for (const char *p = accept; p && *p; p++)
    if (strncasecmp(p, "application/json", 16) == 0)
      return true;
  return false;
}

int keel_http_tasks_handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  bool json = wants_json(req);
  collected_t out = {NULL, 0, 0};
  int rc = keel_tasks_write(json ? KEEL_TASKS_JSON : 0, collect, &out);
  if (rc == 0) {
    keel_http_add_header(res, "Content-Type",
                         json ? "application/json" : "text/plain; charset=utf-8");
    keel_http_add_header(res, "Cache-Control", "no-store");
    rc = keel_http_send(res, out.data, out.len);
  }
  free(out.data);
  return rc;
}
