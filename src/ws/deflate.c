/* WebSocket: permessage-deflate (RFC 7692): agreeing on it in the opening
 * handshake (§7.1) and compressing messages with zlib (§7.2).
 *
 * Windows of 8 bits: zlib's raw deflate refuses windowBits 8, so a
 * compressor limited to 8 bits runs with 9. That stays within the limit:
 * zlib's deflate never looks back further than its window less 262 bytes
 * (MIN_LOOKAHEAD), 250 bytes with a window of 512. A decompressor gets the
 * window agreed, 8 bits included (zlib's inflate takes it).
 *
 * Memory: a direction with context takeover keeps its zlib stream from its
 * first message to the connection's end; one without borrows a stream from
 * the worker's cache (ws_pmd_cache_t) for one message and gives it back
 * reset, so an idle connection holds none and, once the cache is warm, a
 * message allocates nothing. zlib allocates through counting hooks, so
 * ws_pmd_held is exact. */
#define ZLIB_CONST
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "ws-internal.h"

/* ---- Sec-WebSocket-Extensions (RFC 6455 §9.1) --------------------------------- */

/* One parameter of an extension, with its value read as window bits. */
typedef struct ext_param {
  const char *name;
  size_t name_len;
  bool has_value;
  int bits; /* the value when it is 8..15 in decimal without a leading 0, else -1 */
} ext_param_t;

/* permessage-deflate has 4 parameters, each allowed once: an element with
 * more is declined whatever they are, so the first 4 are all it keeps. */
#define EXT_KEPT_PARAMS 4

typedef struct ext_elem {
  const char *name;
  size_t name_len;
  ext_param_t params[EXT_KEPT_PARAMS];
  size_t nparams; /* every parameter, kept or not */
} ext_elem_t;

static bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
    return true;
  return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static const char *skip_ows(const char *p) {
  while (*p == ' ' || *p == '\t')
    p++;
  return p;
}

static const char *skip_token(const char *p) {
  while (is_tchar((unsigned char)*p))
    p++;
  return p;
}

/* RFC 7692 §7.1.2: 1*DIGIT without leading zeros, 8 to 15. */
static int value_bits(const char *v, size_t len) {
  if (len == 1 && (v[0] == '8' || v[0] == '9'))
    return v[0] - '0';
  if (len == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
    return 10 + (v[1] - '0');
  return -1;
}

/* A quoted-string value at p (on its opening quote); unescaped, it must be
 * a token (RFC 6455 §9.1). Returns the end, or NULL if invalid. */
static const char *read_quoted(const char *p, ext_param_t *param) {
  char kept[2];
  size_t len = 0;
  for (p++; *p != '"'; p++) {
    if (*p == '\\')
      p++;
    if (!is_tchar((unsigned char)*p)) /* the end of the string too */
      return NULL;
    if (len < sizeof kept)
      kept[len] = *p;
    len++;
  }
  param->bits = len <= sizeof kept ? value_bits(kept, len) : -1;
  return len > 0 ? p + 1 : NULL;
}

/* token [ "=" ( token / quoted-string ) ], OWS allowed around "=".
 * Returns the end, or NULL if invalid. */
static const char *read_param(const char *p, ext_param_t *param) {
  param->name = p;
  p = skip_token(p);
  param->name_len = (size_t)(p - param->name);
  param->has_value = false;
  param->bits = -1;
  if (param->name_len == 0)
    return NULL;
  const char *q = skip_ows(p);
  if (*q != '=')
    return p;
  param->has_value = true;
  q = skip_ows(q + 1);
  if (*q == '"')
    return read_quoted(q, param);
  const char *value = q;
  q = skip_token(q);
  param->bits = value_bits(value, (size_t)(q - value));
  return q > value ? q : NULL;
}

/* The next element of a field's list at *pp (empty elements are skipped,
 * as RFC 9110 §5.6.1 asks). Returns 1 with *e, 0 at the end, -1 for
 * invalid syntax. */
static int ext_next(const char **pp, ext_elem_t *e) {
  const char *p = skip_ows(*pp);
  while (*p == ',')
    p = skip_ows(p + 1);
  if (*p == '\0') {
    *pp = p;
    return 0;
  }
  e->name = p;
  p = skip_token(p);
  e->name_len = (size_t)(p - e->name);
  e->nparams = 0;
  if (e->name_len == 0)
    return -1;
  for (p = skip_ows(p); *p == ';'; p = skip_ows(p)) {
    ext_param_t param;
    p = read_param(skip_ows(p + 1), &param);
    if (!p)
      return -1;
    if (e->nparams < EXT_KEPT_PARAMS)
      e->params[e->nparams] = param;
    e->nparams++;
  }
  if (*p != ',' && *p != '\0')
    return -1;
  *pp = p;
  return 1;
}

/* Extension and parameter names compare without case, as most peers do. */
static bool name_is(const char *name, size_t len, const char *want) {
  return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

/* ---- Negotiation (RFC 7692 §7.1) ----------------------------------------------- */

/* The parameters one permessage-deflate element states. */
typedef struct pmd_terms {
  bool server_no_context_takeover, client_no_context_takeover;
  int server_max_window_bits; /* 0: absent */
  bool client_bits_present;
  int client_max_window_bits; /* 0: absent, or present without a value */
} pmd_terms_t;

enum { SERVER_NCT, CLIENT_NCT, SERVER_BITS, CLIENT_BITS, NTERMS };
static const char *const term_names[NTERMS] = {"server_no_context_takeover",
                                               "client_no_context_takeover",
                                               "server_max_window_bits", "client_max_window_bits"};

static bool term_set(pmd_terms_t *t, int which, const ext_param_t *param) {
  switch (which) {
  case SERVER_NCT:
  case CLIENT_NCT:
    *(which == SERVER_NCT ? &t->server_no_context_takeover : &t->client_no_context_takeover) = true;
    return !param->has_value;
  case SERVER_BITS:
    t->server_max_window_bits = param->bits;
    return param->bits > 0;
  default:
    t->client_bits_present = true;
    t->client_max_window_bits = param->has_value ? param->bits : 0;
    return !param->has_value || param->bits > 0;
  }
}

/* Reads e's parameters into *t: false for an unknown or repeated one, or a
 * value wrong for it (the no_context_takeover ones take none, window bits
 * are 8..15, and only client_max_window_bits may come without one). */
static bool terms_read(const ext_elem_t *e, pmd_terms_t *t) {
  memset(t, 0, sizeof *t);
  if (e->nparams > EXT_KEPT_PARAMS)
    return false;
  unsigned seen = 0;
  for (size_t i = 0; i < e->nparams; i++) {
    const ext_param_t *param = &e->params[i];
    int which = 0;
    while (which < NTERMS && !name_is(param->name, param->name_len, term_names[which]))
      which++;
    if (which == NTERMS || (seen & 1u << which) || !term_set(t, which, param))
      return false;
    seen |= 1u << which;
  }
  return true;
}

/* t as an extension element. Returns its length, or -1 if it does not fit. */
static int terms_format(const pmd_terms_t *t, char *buf, size_t cap) {
  char server_bits[48] = "", client_bits[48] = ""; /* "; ..._window_bits=" and an int */
  if (t->server_max_window_bits)
    snprintf(server_bits, sizeof server_bits, "; server_max_window_bits=%d",
             t->server_max_window_bits);
  if (t->client_bits_present && t->client_max_window_bits)
    snprintf(client_bits, sizeof client_bits, "; client_max_window_bits=%d",
             t->client_max_window_bits);
  else if (t->client_bits_present)
    snprintf(client_bits, sizeof client_bits, "; client_max_window_bits");
  int n = snprintf(buf, cap, "permessage-deflate%s%s%s%s",
                   t->server_no_context_takeover ? "; server_no_context_takeover" : "",
                   t->client_no_context_takeover ? "; client_no_context_takeover" : "", server_bits,
                   client_bits);
  return n >= 0 && (size_t)n < cap ? n : -1;
}

static bool bits_valid(int bits) { return bits >= 8 && bits <= 15; }

/* A window of the configuration: 15 unless it names one (0 is unset, and
 * keel_ws_accept / keel_ws_connect refuse other values). */
static int cfg_bits(int bits) { return bits_valid(bits) ? bits : 15; }

static int min_bits(int a, int b) { return a < b ? a : b; }

/* The server's answer to an acceptable offer. server_no_context_takeover
 * is echoed, or added unless cfg keeps the server's context; a
 * client_no_context_takeover offered (the client's hint that it keeps no
 * context) is echoed so that the server's decompressor need keep none
 * either; server_max_window_bits answers the offer's, or limits the
 * server's window on its own; client_max_window_bits may only answer the
 * offer's, and is left out at 15 (what its absence means). */
static void server_answer(const keel_ws_deflate_opts_t *cfg, const pmd_terms_t *offer,
                          pmd_terms_t *answer, ws_pmd_params_t *agreed) {
  memset(answer, 0, sizeof *answer);
  answer->server_no_context_takeover =
      offer->server_no_context_takeover || !cfg->server_context_takeover;
  answer->client_no_context_takeover =
      offer->client_no_context_takeover || cfg->client_no_context_takeover;
  int server_bits = cfg_bits(cfg->server_max_window_bits);
  if (offer->server_max_window_bits)
    server_bits = min_bits(server_bits, offer->server_max_window_bits);
  if (offer->server_max_window_bits || server_bits < 15)
    answer->server_max_window_bits = server_bits;
  int client_bits = 15;
  if (offer->client_bits_present) {
    int offered = offer->client_max_window_bits ? offer->client_max_window_bits : 15;
    client_bits = min_bits(offered, cfg_bits(cfg->client_max_window_bits));
  }
  if (client_bits < 15) {
    answer->client_bits_present = true;
    answer->client_max_window_bits = client_bits;
  }
  agreed->server_no_context_takeover = answer->server_no_context_takeover;
  agreed->client_no_context_takeover = answer->client_no_context_takeover;
  agreed->server_max_window_bits = server_bits;
  agreed->client_max_window_bits = client_bits;
}

static bool server_try(const keel_ws_deflate_opts_t *cfg, const ext_elem_t *e, ws_pmd_params_t *out,
                       char *resp, size_t resp_cap) {
  pmd_terms_t offer, answer;
  ws_pmd_params_t agreed;
  if (!name_is(e->name, e->name_len, "permessage-deflate") || !terms_read(e, &offer))
    return false;
  server_answer(cfg, &offer, &answer, &agreed);
  if (terms_format(&answer, resp, resp_cap) < 0)
    return false;
  *out = agreed;
  return true;
}

int ws_pmd_server_negotiate(const keel_ws_deflate_opts_t *cfg, const char *const *values,
                            size_t nvalues, ws_pmd_params_t *out, char *resp, size_t resp_cap) {
  bool accepted = false;
  for (size_t i = 0; i < nvalues; i++) {
    const char *p = values[i];
    ext_elem_t e;
    int rc;
    /* Every field is read to its end: bad syntax anywhere fails the request. */
    while ((rc = ext_next(&p, &e)) > 0)
      if (!accepted && cfg->enable)
        accepted = server_try(cfg, &e, out, resp, resp_cap);
    if (rc < 0)
      return -1;
  }
  return accepted;
}

/* The client's offer: client_max_window_bits always (the server may then
 * limit the client's window; valueless unless cfg sets one),
 * server_max_window_bits when cfg sets one, client_no_context_takeover
 * when cfg asks, and server_no_context_takeover unless cfg asks for the
 * server's context (server_context_takeover): as on a server, an idle
 * connection then holds no decompressor. */
static void client_terms(const keel_ws_deflate_opts_t *cfg, pmd_terms_t *t) {
  memset(t, 0, sizeof *t);
  t->server_no_context_takeover = !cfg->server_context_takeover;
  t->client_no_context_takeover = cfg->client_no_context_takeover;
  t->server_max_window_bits =
      bits_valid(cfg->server_max_window_bits) ? cfg->server_max_window_bits : 0;
  t->client_bits_present = true;
  t->client_max_window_bits =
      bits_valid(cfg->client_max_window_bits) ? cfg->client_max_window_bits : 0;
}

int ws_pmd_client_offer(const keel_ws_deflate_opts_t *cfg, char *buf, size_t cap) {
  pmd_terms_t t;
  client_terms(cfg, &t);
  return terms_format(&t, buf, cap);
}

/* The server's answer against the offer (RFC 7692 §7.1.1, §7.1.2): an
 * offered server_no_context_takeover and server_max_window_bits are
 * accepted only by being answered (the window no larger), and
 * client_max_window_bits comes with a value. The client compresses with
 * the smaller of that value and its own limit. */
static bool client_check(const keel_ws_deflate_opts_t *cfg, const pmd_terms_t *answer,
                         ws_pmd_params_t *out) {
  pmd_terms_t offer;
  client_terms(cfg, &offer);
  if (offer.server_no_context_takeover && !answer->server_no_context_takeover)
    return false;
  if (offer.server_max_window_bits &&
      (!answer->server_max_window_bits ||
       answer->server_max_window_bits > offer.server_max_window_bits))
    return false;
  if (answer->client_bits_present && !answer->client_max_window_bits)
    return false;
  out->server_no_context_takeover = answer->server_no_context_takeover;
  out->client_no_context_takeover =
      answer->client_no_context_takeover || offer.client_no_context_takeover;
  out->server_max_window_bits = cfg_bits(answer->server_max_window_bits);
  out->client_max_window_bits =
      min_bits(cfg_bits(answer->client_max_window_bits), cfg_bits(cfg->client_max_window_bits));
  return true;
}

int ws_pmd_client_accept(const keel_ws_deflate_opts_t *cfg, const char *const *values,
                         size_t nvalues, ws_pmd_params_t *out) {
  ext_elem_t e, first;
  size_t count = 0;
  for (size_t i = 0; i < nvalues; i++) {
    const char *p = values[i];
    int rc;
    while ((rc = ext_next(&p, &e)) > 0)
      if (count++ == 0)
        first = e;
    if (rc < 0)
      return -1;
  }
  if (count == 0)
    return 0;
  /* Only what was offered may be answered, and permessage-deflate once. */
  pmd_terms_t answer;
  if (!cfg->enable || count > 1 || !name_is(first.name, first.name_len, "permessage-deflate") ||
      !terms_read(&first, &answer))
    return -1;
  return client_check(cfg, &answer, out) ? 1 : -1;
}

/* ---- zlib streams and the worker's cache ------------------------------------------ */

/* A zlib stream, with what it holds and its key in the cache. */
typedef struct ws_zs {
  z_stream z;
  size_t held; /* this struct and every allocation of zlib's, headers included */
  struct ws_zs *next;
  bool inflater;
  int window_bits, level, mem_level; /* an inflater's level and mem_level: 0 */
} ws_zs_t;

/* zlib's allocations carry their size in front, so that freeing one can
 * take it off its stream's count. */
typedef union zs_head {
  size_t size;
  max_align_t align;
} zs_head_t;

static voidpf zs_alloc(voidpf opaque, uInt items, uInt size) {
  ws_zs_t *zs = opaque;
  if (size != 0 && items > (SIZE_MAX - sizeof(zs_head_t)) / size)
    return Z_NULL;
  size_t bytes = sizeof(zs_head_t) + (size_t)items * size;
  zs_head_t *head = malloc(bytes);
  if (!head)
    return Z_NULL;
  head->size = bytes;
  zs->held += bytes;
  return head + 1;
}

static void zs_free(voidpf opaque, voidpf p) {
  if (!p)
    return;
  ws_zs_t *zs = opaque;
  zs_head_t *head = (zs_head_t *)p - 1;
  zs->held -= head->size;
  free(head);
}

static int zs_open(bool inflater, int window_bits, int level, int mem_level, ws_zs_t **out) {
  ws_zs_t *zs = calloc(1, sizeof *zs);
  if (!zs)
    return -ENOMEM;
  zs->held = sizeof *zs;
  zs->inflater = inflater;
  zs->window_bits = window_bits;
  zs->level = level;
  zs->mem_level = mem_level;
  zs->z.zalloc = zs_alloc;
  zs->z.zfree = zs_free;
  zs->z.opaque = zs;
  /* Raw deflate (negative windowBits); 8 bits compress with 9 (above). */
  int zrc = inflater ? inflateInit2(&zs->z, -window_bits)
                     : deflateInit2(&zs->z, level, Z_DEFLATED, window_bits == 8 ? -9 : -window_bits,
                                    mem_level, Z_DEFAULT_STRATEGY);
  if (zrc != Z_OK) {
    free(zs);
    return zrc == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
  }
  *out = zs;
  return 0;
}

static void zs_close(ws_zs_t *zs) {
  if (zs->inflater)
    inflateEnd(&zs->z);
  else
    deflateEnd(&zs->z);
  free(zs);
}

static bool zs_reset(ws_zs_t *zs) {
  return (zs->inflater ? inflateReset(&zs->z) : deflateReset(&zs->z)) == Z_OK;
}

/* A worker keeps at most this many idle streams (the least recently given
 * back go first): a few messages compressed at once by its tasks. */
#define WS_PMD_CACHE_MAX 8

struct ws_pmd_cache {
  ws_zs_t *idle; /* most recently given back first */
  size_t count;
};

int ws_pmd_cache_open(ws_pmd_cache_t **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : -ENOMEM;
}

void ws_pmd_cache_close(ws_pmd_cache_t *c) {
  if (!c)
    return;
  while (c->idle) {
    ws_zs_t *zs = c->idle;
    c->idle = zs->next;
    zs_close(zs);
  }
  free(c);
}

size_t ws_pmd_cache_held(const ws_pmd_cache_t *c) {
  size_t held = 0;
  for (const ws_zs_t *zs = c ? c->idle : NULL; zs; zs = zs->next)
    held += zs->held;
  return held;
}

static ws_zs_t *cache_take(ws_pmd_cache_t *c, const ws_zs_t *key) {
  for (ws_zs_t **link = &c->idle; *link; link = &(*link)->next) {
    ws_zs_t *zs = *link;
    if (zs->inflater == key->inflater && zs->window_bits == key->window_bits &&
        zs->level == key->level && zs->mem_level == key->mem_level) {
      *link = zs->next;
      zs->next = NULL;
      c->count--;
      return zs;
    }
  }
  return NULL;
}

/* Takes zs back reset, or frees it (no cache). */
static void cache_give(ws_pmd_cache_t *c, ws_zs_t *zs) {
  if (!c || !zs_reset(zs)) {
    zs_close(zs);
    return;
  }
  if (c->count == WS_PMD_CACHE_MAX) {
    ws_zs_t **link = &c->idle;
    while ((*link)->next)
      link = &(*link)->next;
    zs_close(*link);
    *link = NULL;
    c->count--;
  }
  zs->next = c->idle;
  c->idle = zs;
  c->count++;
}

/* ---- A connection's two directions -------------------------------------------- */

/* One direction: what is sent (compressed) or received (inflated). */
typedef struct pmd_dir {
  ws_zs_t *zs;        /* NULL until needed; without context takeover, held for one message */
  int window_bits;    /* as agreed, 8..15 */
  bool takeover;      /* the window carries over from one message to the next */
  bool ended;         /* inflating: the message's deflate stream ended (BFINAL) */
  unsigned after_end; /* inflating: message bytes after that end */
  uint64_t fed;       /* inflating: compressed bytes of the message so far */
  int err;            /* the first error: the direction is unusable after it */
} pmd_dir_t;

struct ws_pmd {
  pmd_dir_t tx, rx;
  int level, mem_level;
  ws_pmd_cache_t *cache;
};

static int dir_acquire(ws_pmd_t *d, pmd_dir_t *dir, bool inflater) {
  if (dir->zs)
    return 0;
  ws_zs_t key = {.inflater = inflater,
                 .window_bits = dir->window_bits,
                 .level = inflater ? 0 : d->level,
                 .mem_level = inflater ? 0 : d->mem_level};
  dir->zs = d->cache ? cache_take(d->cache, &key) : NULL;
  if (dir->zs)
    return 0;
  return zs_open(inflater, key.window_bits, key.level, key.mem_level, &dir->zs);
}

static void dir_release(ws_pmd_t *d, pmd_dir_t *dir) {
  if (dir->zs)
    cache_give(d->cache, dir->zs);
  dir->zs = NULL;
}

static int dir_fail(ws_pmd_t *d, pmd_dir_t *dir, int err) {
  dir_release(d, dir);
  dir->err = err;
  return err;
}

static void dir_init(pmd_dir_t *dir, int window_bits, bool no_context_takeover) {
  dir->window_bits = window_bits ? window_bits : 15;
  dir->takeover = !no_context_takeover;
}

int ws_pmd_open(const ws_pmd_params_t *p, bool server, int level, int mem_level,
                ws_pmd_cache_t *cache, ws_pmd_t **out) {
  *out = NULL;
  level = level ? level : 6;
  mem_level = mem_level ? mem_level : 8;
  if (level < 1 || level > 9 || mem_level < 1 || mem_level > 9 ||
      (p->server_max_window_bits && !bits_valid(p->server_max_window_bits)) ||
      (p->client_max_window_bits && !bits_valid(p->client_max_window_bits)))
    return -EINVAL;
  ws_pmd_t *d = calloc(1, sizeof *d);
  if (!d)
    return -ENOMEM;
  /* The server compresses with the server_* terms, the client with the client_* ones. */
  dir_init(server ? &d->tx : &d->rx, p->server_max_window_bits, p->server_no_context_takeover);
  dir_init(server ? &d->rx : &d->tx, p->client_max_window_bits, p->client_no_context_takeover);
  d->level = level;
  d->mem_level = mem_level;
  d->cache = cache;
  *out = d;
  return 0;
}

void ws_pmd_close(ws_pmd_t *d) {
  if (!d)
    return;
  dir_release(d, &d->tx);
  dir_release(d, &d->rx);
  free(d);
}

size_t ws_pmd_held(const ws_pmd_t *d) {
  return (d->tx.zs ? d->tx.zs->held : 0) + (d->rx.zs ? d->rx.zs->held : 0);
}

/* ---- Inflating ------------------------------------------------------------------ */

/* What each message's compressed data lacks (RFC 7692 §7.2.2). */
static const uint8_t pmd_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* Output is reserved this much at a time (less near max). */
#define WS_PMD_CHUNK 4096

static uInt clamp_uint(size_t n) { return n > UINT_MAX ? UINT_MAX : (uInt)n; }

/* Runs inflate over the input set in the stream until it is all taken
 * (and its output all out) or the deflate stream ends. At max, inflate
 * gets a 1-byte probe instead of more room: a byte there is a byte too
 * many. */
static int inflate_input(pmd_dir_t *dir, int flush, ws_buf_t *out, size_t max) {
  z_stream *z = &dir->zs->z;
  for (;;) {
    if (out->len > max)
      return -EMSGSIZE;
    size_t want = max - out->len < WS_PMD_CHUNK ? max - out->len : WS_PMD_CHUNK;
    int rc = ws_buf_reserve(out, want, max);
    if (rc < 0)
      return rc;
    size_t room = (out->cap < max ? out->cap : max) - out->len;
    uint8_t probe;
    z->next_out = room ? out->p + out->len : &probe;
    z->avail_out = room ? clamp_uint(room) : 1;
    uInt before = z->avail_out;
    int zrc = inflate(z, flush);
    size_t produced = before - z->avail_out;
    if (room == 0 && produced > 0)
      return -EMSGSIZE;
    out->len += produced;
    if (zrc == Z_STREAM_END) {
      dir->ended = true;
      return 0;
    }
    if (zrc == Z_MEM_ERROR)
      return -ENOMEM;
    if (zrc != Z_OK && zrc != Z_BUF_ERROR) /* Z_DATA_ERROR, Z_NEED_DICT */
      return -EPROTO;
    if (z->avail_in == 0 && z->avail_out > 0)
      return 0;
    if (zrc == Z_BUF_ERROR && z->avail_out > 0)
      return -EPROTO; /* stuck with input and room: zlib never is, but no loop for ever */
  }
}

/* What a message may hold after a block with BFINAL set (§7.2.3.4): the
 * 0x00 that starts the empty stored block §7.2.1 appends, unless that
 * block's header fitted in the final block's last byte. More is a second
 * stream in one message. */
static int check_after_end(pmd_dir_t *dir, const uint8_t *in, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (in[i] != 0x00 || dir->after_end++ > 0)
      return -EPROTO;
  return 0;
}

static int inflate_data(pmd_dir_t *dir, const uint8_t *in, size_t n, ws_buf_t *out, size_t max) {
  z_stream *z = &dir->zs->z;
  while (n > 0 && !dir->ended) {
    z->next_in = in;
    z->avail_in = clamp_uint(n);
    uInt given = z->avail_in;
    int rc = inflate_input(dir, Z_SYNC_FLUSH, out, max);
    in += given - z->avail_in;
    n -= given - z->avail_in;
    if (rc < 0)
      return rc;
  }
  return check_after_end(dir, in, n);
}

/* The tail is the length fields of the empty stored block that ends every
 * message: it inflates to nothing, and leaves inflate at a block boundary
 * (inflate stops at those with Z_BLOCK, and data_type then has 128). A
 * message cut inside a block is not one. */
static int inflate_tail(pmd_dir_t *dir, ws_buf_t *out, size_t max) {
  if (dir->ended)
    return 0; /* the tail completes the stored block after the end */
  z_stream *z = &dir->zs->z;
  z->next_in = pmd_tail;
  z->avail_in = sizeof pmd_tail;
  size_t len = out->len;
  int rc = inflate_input(dir, Z_BLOCK, out, max);
  if (rc < 0)
    return rc;
  return out->len == len && (dir->ended || (z->data_type & 128)) ? 0 : -EPROTO;
}

/* After a block with BFINAL, inflate needs a new stream, but with context
 * takeover the next message still refers to the window: the new stream
 * starts with the old one's window as its dictionary. */
static int inflate_restart(pmd_dir_t *dir) {
  z_stream *z = &dir->zs->z;
  uint8_t *window = malloc((size_t)1 << dir->window_bits);
  if (!window)
    return -ENOMEM;
  uInt len = 0;
  bool ok = inflateGetDictionary(z, window, &len) == Z_OK && inflateReset(z) == Z_OK &&
            inflateSetDictionary(z, window, len) == Z_OK;
  free(window);
  return ok ? 0 : -EPROTO;
}

static int inflate_end_message(ws_pmd_t *d, pmd_dir_t *dir) {
  int rc = 0;
  if (!dir->takeover)
    dir_release(d, dir);
  else if (dir->ended)
    rc = inflate_restart(dir);
  dir->ended = false;
  dir->after_end = 0;
  dir->fed = 0;
  return rc;
}

int ws_pmd_inflate(ws_pmd_t *d, const uint8_t *in, size_t n, bool fin, ws_buf_t *out, size_t max) {
  pmd_dir_t *dir = &d->rx;
  if (dir->err)
    return dir->err;
  dir->fed += n;
  int rc = 0;
  /* An empty payload (some peers' empty message) inflates to nothing. */
  if (dir->fed > 0) {
    rc = dir_acquire(d, dir, true);
    if (rc == 0)
      rc = inflate_data(dir, in, n, out, max);
    if (rc == 0 && fin)
      rc = inflate_tail(dir, out, max);
  }
  if (rc == 0 && fin)
    rc = inflate_end_message(d, dir);
  return rc < 0 ? dir_fail(d, dir, rc) : 0;
}

/* ---- Deflating ------------------------------------------------------------------ */

static int deflate_input(ws_zs_t *zs, const uint8_t *in, size_t n, int flush, ws_buf_t *out) {
  z_stream *z = &zs->z;
  z->avail_in = 0;
  for (;;) {
    if (z->avail_in == 0) {
      z->next_in = in;
      z->avail_in = clamp_uint(n);
      in += z->avail_in;
      n -= z->avail_in;
    }
    int rc = ws_buf_reserve(out, WS_PMD_CHUNK, SIZE_MAX);
    if (rc < 0)
      return rc;
    z->next_out = out->p + out->len;
    z->avail_out = clamp_uint(out->cap - out->len);
    uInt before = z->avail_out;
    int zrc = deflate(z, n > 0 ? Z_NO_FLUSH : flush);
    out->len += before - z->avail_out;
    if (zrc != Z_OK && zrc != Z_BUF_ERROR)
      return -EPROTO; /* Z_STREAM_ERROR: not with a stream used as here */
    /* With room left, zlib has taken all the input and done the flush. */
    if (n == 0 && z->avail_in == 0 && z->avail_out > 0)
      return 0;
    if (zrc == Z_BUF_ERROR && z->avail_in > 0 && z->avail_out > 0)
      return -EPROTO; /* stuck: as above */
  }
}

/* A message's end: the 00 00 ff ff that zlib's sync flush ends with goes
 * (RFC 7692 §7.2.1). When zlib wrote nothing at all (an empty message just
 * after another's flush: zlib does not flush twice in a row) the message
 * is the byte 0x00, the header of an empty stored block (§7.2.3.6), which
 * is also what the flush of an empty message on a fresh stream leaves. */
static int deflate_trim(ws_buf_t *out, size_t start) {
  size_t produced = out->len - start;
  if (produced == 0) {
    int rc = ws_buf_reserve(out, 1, SIZE_MAX);
    if (rc < 0)
      return rc;
    out->p[out->len++] = 0x00;
    return 0;
  }
  if (produced < sizeof pmd_tail ||
      memcmp(out->p + out->len - sizeof pmd_tail, pmd_tail, sizeof pmd_tail) != 0)
    return -EPROTO; /* not zlib's sync flush */
  out->len -= sizeof pmd_tail;
  return 0;
}

int ws_pmd_deflate(ws_pmd_t *d, const uint8_t *in, size_t n, bool fin, ws_buf_t *out) {
  pmd_dir_t *dir = &d->tx;
  if (dir->err)
    return dir->err;
  size_t start = out->len;
  int rc = dir_acquire(d, dir, false);
  if (rc == 0)
    rc = deflate_input(dir->zs, in, n, fin ? Z_SYNC_FLUSH : Z_NO_FLUSH, out);
  if (rc == 0 && fin)
    rc = deflate_trim(out, start);
  if (rc < 0)
    return dir_fail(d, dir, rc);
  if (fin && !dir->takeover)
    dir_release(d, dir);
  return 0;
}
