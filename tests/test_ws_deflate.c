/* permessage-deflate (src/ws/deflate.c), without a backend: the server's
 * negotiation (a table of offers, the syntax of the field, and every
 * combination of the four parameters against several configurations, as
 * Autobahn's cases 12 and 13 offer them, checked against a model of RFC
 * 7692 §7.1 and then carried through the client's check and messages
 * both ways), the client's offer and its check of answers, RFC 7692
 * §7.2.3's examples, round trips (sizes 0 to 1 MiB, random and
 * compressible data, every window, with and without context takeover each
 * way, whole, in pieces and a byte at a time), decompression bombs cut at
 * max with bounded memory, corrupt input, the worker's cache, the memory a
 * connection holds in each configuration (printed: the figures the
 * documentation states), and interop with Python's zlib when python3 is
 * there. */
#include "keel-test.h"

#include <zlib.h>

#include "ws-internal.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

/* xorshift64: a fixed sequence, so a failure replays. */
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static int min_int(int a, int b) { return a < b ? a : b; }

/* ---- Data ------------------------------------------------------------------------ */

enum { DATA_RANDOM, DATA_TEXT, DATA_ZEROS, DATA_REPEATS, DATA_KINDS };

/* Random bytes; words from a small vocabulary; zeros; or random 64-byte
 * runs and copies of runs 64 bytes to 4 KiB back (matches at every
 * distance, to catch a compressor that looks back past its window). */
static void fill(uint8_t *p, size_t n, int kind) {
  static const char *const words[] = {"keel ",    "socket ",  "message ", "deflate ", "window ",
                                      "context ", "frame ",   "server ",  "client ",  "zlib ",
                                      "\"id\": ", "{\"op\":", "12345, ",  "\n"};
  size_t i = 0;
  while (i < n) {
    if (kind == DATA_RANDOM) {
      p[i++] = (uint8_t)rng();
    } else if (kind == DATA_ZEROS) {
      p[i++] = 0;
    } else if (kind == DATA_TEXT) {
      const char *w = words[rng() % (sizeof words / sizeof words[0])];
      for (size_t j = 0; w[j] && i < n; j++)
        p[i++] = (uint8_t)w[j];
    } else {
      size_t back = 64 * (1 + rng() % 64);
      bool copy = i >= back && rng() % 2;
      for (size_t j = 0; j < 64 && i < n; j++, i++)
        p[i] = copy ? p[i - back] : (uint8_t)rng();
    }
  }
}

/* ---- Negotiation: the server ----------------------------------------------------- */

static keel_ws_deflate_opts_t on(void) { return (keel_ws_deflate_opts_t){.enable = true}; }

typedef struct server_case {
  keel_ws_deflate_opts_t cfg;
  const char *values[3]; /* NULL-terminated */
  int rc;
  const char *resp;
  ws_pmd_params_t params;
} server_case_t;

static size_t count_values(const char *const *values) {
  size_t n = 0;
  while (n < 3 && values[n])
    n++;
  return n;
}

static void check_server_case(const server_case_t *c, size_t index) {
  char resp[WS_PMD_EXT_MAX] = "";
  ws_pmd_params_t got = {0};
  int rc =
      ws_pmd_server_negotiate(&c->cfg, c->values, count_values(c->values), &got, resp, sizeof resp);
  if (rc != c->rc || (rc == 1 && strcmp(resp, c->resp) != 0))
    fprintf(stderr, "# case %zu: \"%s\": rc %d (want %d), \"%s\" (want \"%s\")\n", index,
            c->values[0] ? c->values[0] : "", rc, c->rc, resp, c->resp ? c->resp : "");
  assert_int_equal(rc, c->rc);
  if (rc != 1)
    return;
  assert_string_equal(resp, c->resp);
  assert_int_equal(got.server_no_context_takeover, c->params.server_no_context_takeover);
  assert_int_equal(got.client_no_context_takeover, c->params.client_no_context_takeover);
  assert_int_equal(got.server_max_window_bits, c->params.server_max_window_bits);
  assert_int_equal(got.client_max_window_bits, c->params.client_max_window_bits);
}

#define PMD "permessage-deflate"
#define SNCT "; server_no_context_takeover"

static void test_server_table(void **state) {
  (void)state;
  keel_ws_deflate_opts_t dflt = on(), keep = on(), ask_client = on(), small = on();
  keep.server_context_takeover = true;
  ask_client.client_no_context_takeover = true;
  small.server_max_window_bits = 10;
  small.client_max_window_bits = 9;
  const ws_pmd_params_t p15 = {true, false, 15, 15};
  const server_case_t cases[] = {
      /* keel's default answer: no server context */
      {dflt, {PMD}, 1, PMD SNCT, p15},
      {keep, {PMD}, 1, PMD, {false, false, 15, 15}},
      {ask_client, {PMD}, 1, PMD SNCT "; client_no_context_takeover", {true, true, 15, 15}},
      {keep, {PMD "; server_no_context_takeover"}, 1, PMD SNCT, p15},
      /* a client_no_context_takeover offered is echoed */
      {keep,
       {PMD "; client_no_context_takeover"},
       1,
       PMD "; client_no_context_takeover",
       {false, true, 15, 15}},
      /* windows */
      {dflt, {PMD "; client_max_window_bits"}, 1, PMD SNCT, p15},
      {dflt, {PMD "; client_max_window_bits=15"}, 1, PMD SNCT, p15},
      {dflt,
       {PMD "; client_max_window_bits=12"},
       1,
       PMD SNCT "; client_max_window_bits=12",
       {true, false, 15, 12}},
      {dflt,
       {PMD "; client_max_window_bits=8"},
       1,
       PMD SNCT "; client_max_window_bits=8",
       {true, false, 15, 8}},
      {dflt,
       {PMD "; server_max_window_bits=10"},
       1,
       PMD SNCT "; server_max_window_bits=10",
       {true, false, 10, 15}},
      {dflt, {PMD "; server_max_window_bits=15"}, 1, PMD SNCT "; server_max_window_bits=15", p15},
      {small, {PMD}, 1, PMD SNCT "; server_max_window_bits=10", {true, false, 10, 15}},
      {small,
       {PMD "; server_max_window_bits=12"},
       1,
       PMD SNCT "; server_max_window_bits=10",
       {true, false, 10, 15}},
      {small,
       {PMD "; server_max_window_bits=8"},
       1,
       PMD SNCT "; server_max_window_bits=8",
       {true, false, 8, 15}},
      {small,
       {PMD "; client_max_window_bits"},
       1,
       PMD SNCT "; server_max_window_bits=10; client_max_window_bits=9",
       {true, false, 10, 9}},
      {small,
       {PMD "; client_max_window_bits=11"},
       1,
       PMD SNCT "; server_max_window_bits=10; client_max_window_bits=9",
       {true, false, 10, 9}},
      {small,
       {PMD "; client_max_window_bits=8"},
       1,
       PMD SNCT "; server_max_window_bits=10; client_max_window_bits=8",
       {true, false, 10, 8}},
      /* declined: unknown, repeated, valued or valueless where not allowed */
      {dflt, {PMD "; foo"}, 0, NULL, {0}},
      {dflt, {PMD "; foo=1"}, 0, NULL, {0}},
      {dflt, {"x-webkit-deflate-frame"}, 0, NULL, {0}},
      {dflt, {"deflate-frame; no_context_takeover"}, 0, NULL, {0}},
      {dflt, {PMD "; server_no_context_takeover; server_no_context_takeover"}, 0, NULL, {0}},
      {dflt, {PMD "; client_max_window_bits; client_max_window_bits=10"}, 0, NULL, {0}},
      {dflt, {PMD "; server_max_window_bits=10; Server_Max_Window_Bits=10"}, 0, NULL, {0}},
      {dflt, {PMD "; server_no_context_takeover=1"}, 0, NULL, {0}},
      {dflt, {PMD "; client_no_context_takeover=true"}, 0, NULL, {0}},
      {dflt, {PMD "; server_max_window_bits"}, 0, NULL, {0}},
      {dflt, {PMD "; server_max_window_bits=7"}, 0, NULL, {0}},
      {dflt, {PMD "; server_max_window_bits=16"}, 0, NULL, {0}},
      {dflt, {PMD "; server_max_window_bits=08"}, 0, NULL, {0}},
      {dflt, {PMD "; server_max_window_bits=010"}, 0, NULL, {0}},
      {dflt, {PMD "; server_max_window_bits=1a"}, 0, NULL, {0}},
      {dflt, {PMD "; server_max_window_bits=+9"}, 0, NULL, {0}},
      {dflt, {PMD "; client_max_window_bits=0"}, 0, NULL, {0}},
      {dflt, {PMD "; client_max_window_bits=7"}, 0, NULL, {0}},
      {dflt, {PMD "; client_max_window_bits=\"16\""}, 0, NULL, {0}},
      {dflt,
       {PMD "; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9;"
            " client_max_window_bits=9; x"},
       0,
       NULL,
       {0}},
      /* quoted values */
      {dflt,
       {PMD "; client_max_window_bits=\"10\""},
       1,
       PMD SNCT "; client_max_window_bits=10",
       {true, false, 15, 10}},
      {dflt,
       {PMD "; server_max_window_bits=\"1\\2\""},
       1,
       PMD SNCT "; server_max_window_bits=12",
       {true, false, 12, 15}},
      /* case, and whitespace around every separator */
      {dflt,
       {"PerMessage-Deflate; Server_Max_Window_Bits=11"},
       1,
       PMD SNCT "; server_max_window_bits=11",
       {true, false, 11, 15}},
      {dflt,
       {" \t" PMD " ;\tclient_max_window_bits = 9 ; server_no_context_takeover\t "},
       1,
       PMD SNCT "; client_max_window_bits=9",
       {true, false, 15, 9}},
      /* several offers: the first acceptable wins */
      {dflt,
       {PMD "; server_max_window_bits=7, " PMD "; client_max_window_bits=10, " PMD},
       1,
       PMD SNCT "; client_max_window_bits=10",
       {true, false, 15, 10}},
      {dflt,
       {"foo; bar=\"baz\", " PMD "; foo, " PMD "; server_max_window_bits=9"},
       1,
       PMD SNCT "; server_max_window_bits=9",
       {true, false, 9, 15}},
      {dflt,
       {PMD "; foo", "x-other", PMD "; server_max_window_bits=13"},
       1,
       PMD SNCT "; server_max_window_bits=13",
       {true, false, 13, 15}},
      {dflt,
       {PMD "; client_max_window_bits=11", PMD},
       1,
       PMD SNCT "; client_max_window_bits=11",
       {true, false, 15, 11}},
      /* empty elements and fields */
      {dflt, {", ," PMD ",", ""}, 1, PMD SNCT, p15},
      {dflt, {"", " "}, 0, NULL, {0}},
      {dflt, {NULL}, 0, NULL, {0}},
      /* off: nothing is accepted */
      {{0}, {PMD}, 0, NULL, {0}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_server_case(&cases[i], i);
}

/* Fields that are not RFC 6455 §9.1 syntax: the request gets 400, even
 * when an acceptable offer came first. */
static void test_server_syntax(void **state) {
  (void)state;
  static const char *const bad[] = {
      PMD ";",
      PMD "; ",
      PMD ";;server_no_context_takeover",
      PMD "; =10",
      PMD "; server_max_window_bits=",
      PMD "; server_max_window_bits= ;",
      PMD "; a=b=c",
      PMD "; a=\"unterminated",
      PMD "; a=\"\"",
      PMD "; a=\"1 0\"",
      PMD "; a=\"1,0\"",
      PMD "; a=\"\\",
      PMD "; a=(1)",
      "permessage deflate",
      "permessage-deflate x",
      "; server_no_context_takeover",
      "perm\x01"
      "essage-deflate",
      PMD "; a=\x7f",
      PMD "; a=\xc3\xa9",
      "\"" PMD "\"",
      PMD "/1",
  };
  keel_ws_deflate_opts_t cfg = on();
  char resp[WS_PMD_EXT_MAX];
  ws_pmd_params_t out;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *values[2] = {PMD, bad[i]};
    int rc = ws_pmd_server_negotiate(&cfg, &values[1], 1, &out, resp, sizeof resp);
    if (rc != -1)
      fprintf(stderr, "# \"%s\": %d\n", bad[i], rc);
    assert_int_equal(rc, -1);
    assert_int_equal(ws_pmd_server_negotiate(&cfg, values, 2, &out, resp, sizeof resp), -1);
  }
  /* A response that does not fit: declined, never cut. */
  const char *values[1] = {PMD "; server_max_window_bits=9"};
  assert_int_equal(ws_pmd_server_negotiate(&cfg, values, 1, &out, resp, 20), 0);
}

/* ---- Negotiation: every combination, through both sides -------------------------- */

/* What a client offers: server_max_window_bits 0 absent; client_max_window_bits
 * -1 absent, 0 without a value. */
typedef struct offer_spec {
  bool server_nct, client_nct;
  int server_bits, client_bits;
} offer_spec_t;

static void offer_string(const offer_spec_t *o, bool reversed, char *buf, size_t cap) {
  char parts[4][40];
  int n = 0;
  if (o->server_nct)
    snprintf(parts[n++], sizeof parts[0], "server_no_context_takeover");
  if (o->client_nct)
    snprintf(parts[n++], sizeof parts[0], "client_no_context_takeover");
  if (o->server_bits)
    snprintf(parts[n++], sizeof parts[0], "server_max_window_bits=%d", o->server_bits);
  if (o->client_bits > 0)
    snprintf(parts[n++], sizeof parts[0], "client_max_window_bits=%d", o->client_bits);
  else if (o->client_bits == 0)
    snprintf(parts[n++], sizeof parts[0], "client_max_window_bits");
  size_t len = (size_t)snprintf(buf, cap, "permessage-deflate");
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(buf + len, cap - len, "; %s", parts[reversed ? n - 1 - i : i]);
}

/* RFC 7692 §7.1 as keel applies it, written out again. */
static void model_answer(const keel_ws_deflate_opts_t *cfg, const offer_spec_t *o,
                         ws_pmd_params_t *p, char *resp, size_t cap) {
  int server_cap = cfg->server_max_window_bits ? cfg->server_max_window_bits : 15;
  int client_cap = cfg->client_max_window_bits ? cfg->client_max_window_bits : 15;
  p->server_no_context_takeover = o->server_nct || !cfg->server_context_takeover;
  p->client_no_context_takeover = o->client_nct || cfg->client_no_context_takeover;
  p->server_max_window_bits = o->server_bits ? min_int(o->server_bits, server_cap) : server_cap;
  p->client_max_window_bits = 15;
  if (o->client_bits >= 0)
    p->client_max_window_bits = min_int(o->client_bits ? o->client_bits : 15, client_cap);
  size_t len = (size_t)snprintf(resp, cap, "permessage-deflate");
  if (p->server_no_context_takeover)
    len += (size_t)snprintf(resp + len, cap - len, "; server_no_context_takeover");
  if (p->client_no_context_takeover)
    len += (size_t)snprintf(resp + len, cap - len, "; client_no_context_takeover");
  if (o->server_bits || p->server_max_window_bits < 15)
    len += (size_t)snprintf(resp + len, cap - len, "; server_max_window_bits=%d",
                            p->server_max_window_bits);
  if (p->client_max_window_bits < 15)
    snprintf(resp + len, cap - len, "; client_max_window_bits=%d", p->client_max_window_bits);
}

static void assert_params_equal(const ws_pmd_params_t *a, const ws_pmd_params_t *b) {
  assert_int_equal(a->server_no_context_takeover, b->server_no_context_takeover);
  assert_int_equal(a->client_no_context_takeover, b->client_no_context_takeover);
  assert_int_equal(a->server_max_window_bits, b->server_max_window_bits);
  assert_int_equal(a->client_max_window_bits, b->client_max_window_bits);
}

/* One message from one side to the other, compressed whole and inflated
 * in pieces of `piece` bytes (0: whole); max is the message's size. */
static void send_one(ws_pmd_t *from, ws_pmd_t *to, const uint8_t *msg, size_t len, size_t piece) {
  ws_buf_t comp = {0}, plain = {0};
  assert_int_equal(ws_pmd_deflate(from, msg, len, true, &comp), 0);
  size_t step = piece ? piece : comp.len;
  size_t off = 0;
  do {
    size_t n = comp.len - off < step ? comp.len - off : step;
    assert_int_equal(ws_pmd_inflate(to, comp.p + off, n, off + n == comp.len, &plain, len), 0);
    off += n;
  } while (off < comp.len);
  assert_int_equal(plain.len, len);
  if (len)
    assert_memory_equal(plain.p, msg, len);
  ws_buf_free(&comp);
  ws_buf_free(&plain);
}

/* The client's side of one combination: its offer (when a configuration
 * can make it) gets the same answer, its check of the answer agrees with
 * the server, and messages go both ways with what was agreed. */
static void client_side(const keel_ws_deflate_opts_t *server_cfg, const offer_spec_t *o,
                        const ws_pmd_params_t *agreed, const char *resp) {
  keel_ws_deflate_opts_t cfg = {.enable = true,
                                .server_context_takeover = !o->server_nct,
                                .client_no_context_takeover = o->client_nct,
                                .server_max_window_bits = o->server_bits,
                                .client_max_window_bits = o->client_bits};
  char offer[WS_PMD_EXT_MAX], answer[WS_PMD_EXT_MAX];
  ws_pmd_params_t from_server, from_client;
  assert_true(ws_pmd_client_offer(&cfg, offer, sizeof offer) > 0);
  const char *values[1] = {offer};
  assert_int_equal(
      ws_pmd_server_negotiate(server_cfg, values, 1, &from_server, answer, sizeof answer), 1);
  assert_string_equal(answer, resp);
  values[0] = resp;
  assert_int_equal(ws_pmd_client_accept(&cfg, values, 1, &from_client), 1);
  assert_params_equal(&from_client, agreed);

  ws_pmd_t *server = NULL, *client = NULL;
  assert_int_equal(ws_pmd_open(agreed, true, 0, 0, NULL, &server), 0);
  assert_int_equal(ws_pmd_open(&from_client, false, 0, 0, NULL, &client), 0);
  uint8_t msg[1500];
  for (int i = 0; i < 2; i++) {
    fill(msg, sizeof msg, DATA_REPEATS);
    send_one(server, client, msg, sizeof msg, 61);
    send_one(client, server, msg, sizeof msg, 61);
  }
  ws_pmd_close(server);
  ws_pmd_close(client);
}

static void test_combinations(void **state) {
  (void)state;
  keel_ws_deflate_opts_t cfgs[6] = {on(), on(), on(), on(), on(), on()};
  cfgs[1].server_context_takeover = true;
  cfgs[2].client_no_context_takeover = true;
  cfgs[3].server_max_window_bits = 10;
  cfgs[4].client_max_window_bits = 9;
  cfgs[5] = (keel_ws_deflate_opts_t){true, true, true, 8, 8, 1, 1, 0};
  size_t checked = 0, through = 0;
  for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++)
    for (int combo = 0; combo < 4 * 9 * 10; combo++) {
      offer_spec_t o = {.server_nct = combo & 1,
                        .client_nct = combo >> 1 & 1,
                        .server_bits = combo / 4 % 9 ? 7 + combo / 4 % 9 : 0,
                        .client_bits = combo / 36 < 2 ? combo / 36 - 1 : 6 + combo / 36};
      char offer[WS_PMD_EXT_MAX], want[WS_PMD_EXT_MAX], got[WS_PMD_EXT_MAX];
      offer_string(&o, combo % 3 == 0, offer, sizeof offer);
      ws_pmd_params_t expect, agreed;
      model_answer(&cfgs[c], &o, &expect, want, sizeof want);
      const char *values[1] = {offer};
      int rc = ws_pmd_server_negotiate(&cfgs[c], values, 1, &agreed, got, sizeof got);
      if (rc != 1 || strcmp(got, want) != 0)
        fprintf(stderr, "# cfg %zu, \"%s\": %d \"%s\", want \"%s\"\n", c, offer, rc, got, want);
      assert_int_equal(rc, 1);
      assert_string_equal(got, want);
      assert_params_equal(&agreed, &expect);
      checked++;
      if (o.client_bits >= 0) { /* what a keel client's configuration can offer */
        client_side(&cfgs[c], &o, &agreed, got);
        through++;
      }
    }
  fprintf(stderr, "# %zu offers answered as the model says, %zu through the client and back\n",
          checked, through);
}

/* ---- Negotiation: the client ------------------------------------------------------ */

static void test_client_offer(void **state) {
  (void)state;
  static const struct {
    keel_ws_deflate_opts_t cfg;
    const char *offer;
  } cases[] = {
      {{.enable = true}, PMD SNCT "; client_max_window_bits"},
      {{.enable = true, .server_context_takeover = true}, PMD "; client_max_window_bits"},
      {{.enable = true, .client_no_context_takeover = true},
       PMD SNCT "; client_no_context_takeover; client_max_window_bits"},
      {{.enable = true, .server_max_window_bits = 10, .client_max_window_bits = 12},
       PMD SNCT "; server_max_window_bits=10; client_max_window_bits=12"},
      {{.enable = true, .server_context_takeover = true, .client_max_window_bits = 8},
       PMD "; client_max_window_bits=8"},
  };
  char buf[WS_PMD_EXT_MAX];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int n = ws_pmd_client_offer(&cases[i].cfg, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(cases[i].offer));
    assert_string_equal(buf, cases[i].offer);
    assert_int_equal(ws_pmd_client_offer(&cases[i].cfg, buf, (size_t)n), -1);
    assert_int_equal(ws_pmd_client_offer(&cases[i].cfg, buf, (size_t)n + 1), n);
  }
  /* The longest offer fits WS_PMD_EXT_MAX. */
  keel_ws_deflate_opts_t all = {true, false, true, 15, 15, 9, 9, 0};
  assert_true(ws_pmd_client_offer(&all, buf, sizeof buf) > 0);
}

typedef struct client_case {
  keel_ws_deflate_opts_t cfg;
  const char *values[3];
  int rc;
  ws_pmd_params_t params;
} client_case_t;

static void test_client_accept(void **state) {
  (void)state;
  keel_ws_deflate_opts_t dflt = on(), keep = on(), bits = on(), hint = on();
  keep.server_context_takeover = true;
  bits.server_max_window_bits = 10;
  bits.client_max_window_bits = 10;
  hint.client_no_context_takeover = true;
  const ws_pmd_params_t p15 = {true, false, 15, 15};
  const client_case_t cases[] = {
      {dflt, {NULL}, 0, {0}},
      {dflt, {"", " , "}, 0, {0}},
      {dflt, {PMD SNCT}, 1, p15},
      {dflt, {"PERMESSAGE-DEFLATE;SERVER_NO_CONTEXT_TAKEOVER"}, 1, p15},
      {dflt, {PMD SNCT "; client_no_context_takeover"}, 1, {true, true, 15, 15}},
      {dflt, {PMD SNCT "; client_max_window_bits=9"}, 1, {true, false, 15, 9}},
      {dflt, {PMD SNCT "; client_max_window_bits=\"8\""}, 1, {true, false, 15, 8}},
      {dflt, {PMD SNCT "; server_max_window_bits=8"}, 1, {true, false, 8, 15}},
      {dflt, {PMD "; server_max_window_bits=12" SNCT}, 1, {true, false, 12, 15}},
      /* server_no_context_takeover offered but not answered */
      {dflt, {PMD}, -1, {0}},
      {keep, {PMD}, 1, {false, false, 15, 15}},
      {keep, {PMD SNCT}, 1, p15},
      /* our hint holds even when the server does not echo it */
      {hint, {PMD SNCT}, 1, {true, true, 15, 15}},
      /* windows: the offered server window answered, not above; ours the smaller */
      {bits, {PMD SNCT "; server_max_window_bits=10"}, 1, {true, false, 10, 10}},
      {bits,
       {PMD SNCT "; server_max_window_bits=8; client_max_window_bits=9"},
       1,
       {true, false, 8, 9}},
      {bits,
       {PMD SNCT "; server_max_window_bits=9; client_max_window_bits=12"},
       1,
       {true, false, 9, 10}},
      {bits, {PMD SNCT "; server_max_window_bits=11"}, -1, {0}},
      {bits, {PMD SNCT}, -1, {0}},
      /* bad answers */
      {dflt, {PMD SNCT "; client_max_window_bits"}, -1, {0}},
      {dflt, {PMD SNCT "; server_max_window_bits"}, -1, {0}},
      {dflt, {PMD SNCT "; server_max_window_bits=16"}, -1, {0}},
      {dflt, {PMD SNCT "; client_max_window_bits=7"}, -1, {0}},
      {dflt, {PMD SNCT "; client_max_window_bits=09"}, -1, {0}},
      {dflt, {PMD SNCT SNCT}, -1, {0}},
      {dflt, {PMD SNCT "; client_no_context_takeover; client_no_context_takeover"}, -1, {0}},
      {dflt, {PMD SNCT "=1"}, -1, {0}},
      {dflt, {PMD SNCT "; mystery"}, -1, {0}},
      {dflt, {PMD SNCT ", " PMD SNCT}, -1, {0}},
      {dflt, {PMD SNCT, PMD SNCT}, -1, {0}},
      {dflt, {"x-webkit-deflate-frame"}, -1, {0}},
      {dflt, {PMD SNCT ", x-other"}, -1, {0}},
      {dflt, {PMD SNCT ";"}, -1, {0}},
      {dflt, {PMD "; server_no_context_takeover x"}, -1, {0}},
      /* nothing was offered */
      {{0}, {PMD}, -1, {0}},
      {{0}, {NULL}, 0, {0}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const client_case_t *c = &cases[i];
    ws_pmd_params_t got = {0};
    int rc = ws_pmd_client_accept(&c->cfg, c->values, count_values(c->values), &got);
    if (rc != c->rc)
      fprintf(stderr, "# case %zu \"%s\": %d, want %d\n", i, c->values[0] ? c->values[0] : "", rc,
              c->rc);
    assert_int_equal(rc, c->rc);
    if (rc == 1)
      assert_params_equal(&got, &c->params);
  }
}

/* ---- RFC 7692 §7.2.3 --------------------------------------------------------------- */

static const ws_pmd_params_t takeover15 = {false, false, 15, 15};
static const ws_pmd_params_t none15 = {true, true, 15, 15};

static ws_pmd_t *open_pmd(const ws_pmd_params_t *p, bool server, ws_pmd_cache_t *cache) {
  ws_pmd_t *d = NULL;
  assert_int_equal(ws_pmd_open(p, server, 0, 0, cache, &d), 0);
  assert_non_null(d);
  return d;
}

/* Inflates one message given as bytes; returns the error or 0 and the text. */
static int inflate_bytes(ws_pmd_t *d, const uint8_t *in, size_t n, char *text, size_t cap) {
  ws_buf_t out = {0};
  int rc = ws_pmd_inflate(d, in, n, true, &out, cap - 1);
  if (rc == 0) {
    if (out.len)
      memcpy(text, out.p, out.len);
    text[out.len] = '\0';
  }
  ws_buf_free(&out);
  return rc;
}

static void expect_deflated(ws_pmd_t *d, const char *text, const uint8_t *want, size_t want_len) {
  ws_buf_t out = {0};
  assert_int_equal(ws_pmd_deflate(d, (const uint8_t *)text, strlen(text), true, &out), 0);
  assert_int_equal(out.len, want_len);
  assert_memory_equal(out.p, want, want_len);
  ws_buf_free(&out);
}

static void test_rfc_examples(void **state) {
  (void)state;
  static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
  static const uint8_t hello_again[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
  static const uint8_t stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48,
                                   0x65, 0x6c, 0x6c, 0x6f, 0x00};
  static const uint8_t bfinal[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
  static const uint8_t two_blocks[] = {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff,
                                       0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};
  static const uint8_t empty[] = {0x00};
  char text[64];

  /* §7.2.3.1: "Hello", both ways; zlib gives these very bytes. */
  ws_pmd_t *rx = open_pmd(&none15, true, NULL), *tx = open_pmd(&none15, true, NULL);
  assert_int_equal(inflate_bytes(rx, hello, sizeof hello, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  expect_deflated(tx, "Hello", hello, sizeof hello);
  expect_deflated(tx, "Hello", hello, sizeof hello); /* no takeover: the same again */
  /* §7.2.3.3: a stored block; §7.2.3.5: two blocks in one message; §7.2.3.6: empty */
  assert_int_equal(inflate_bytes(rx, stored, sizeof stored, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  assert_int_equal(inflate_bytes(rx, two_blocks, sizeof two_blocks, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  assert_int_equal(inflate_bytes(rx, empty, sizeof empty, text, sizeof text), 0);
  assert_string_equal(text, "");
  expect_deflated(tx, "", empty, sizeof empty);
  /* An empty payload, as some peers send an empty message: empty too. */
  assert_int_equal(inflate_bytes(rx, NULL, 0, text, sizeof text), 0);
  assert_string_equal(text, "");
  ws_pmd_close(rx);
  ws_pmd_close(tx);

  /* §7.2.3.2: sharing the window; the empty message after a flush (zlib
   * writes nothing then) is still 0x00. */
  rx = open_pmd(&takeover15, true, NULL);
  tx = open_pmd(&takeover15, true, NULL);
  expect_deflated(tx, "Hello", hello, sizeof hello);
  expect_deflated(tx, "Hello", hello_again, sizeof hello_again);
  expect_deflated(tx, "", empty, sizeof empty);
  expect_deflated(tx, "", empty, sizeof empty);
  ws_buf_t later = {0}; /* zlib codes it otherwise now (as Python's does), as validly */
  assert_int_equal(ws_pmd_deflate(tx, (const uint8_t *)"Hello", 5, true, &later), 0);
  assert_int_equal(inflate_bytes(rx, hello, sizeof hello, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  assert_int_equal(inflate_bytes(rx, hello_again, sizeof hello_again, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  assert_int_equal(inflate_bytes(rx, empty, sizeof empty, text, sizeof text), 0);
  assert_int_equal(inflate_bytes(rx, NULL, 0, text, sizeof text), 0);
  assert_int_equal(inflate_bytes(rx, later.p, later.len, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  ws_buf_free(&later);
  assert_int_equal(inflate_bytes(rx, hello_again, sizeof hello_again, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  /* §7.2.3.4: a block with BFINAL; the next message still refers to the window. */
  assert_int_equal(inflate_bytes(rx, bfinal, sizeof bfinal, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  assert_int_equal(inflate_bytes(rx, hello_again, sizeof hello_again, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  /* ... and without the 0x00 (the stored block's header in the last byte) */
  assert_int_equal(inflate_bytes(rx, bfinal, sizeof bfinal - 1, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  assert_int_equal(inflate_bytes(rx, hello_again, sizeof hello_again, text, sizeof text), 0);
  assert_string_equal(text, "Hello");
  ws_pmd_close(rx);
  ws_pmd_close(tx);

  /* After BFINAL, anything but that 0x00 is a second stream: -EPROTO. */
  static const uint8_t two_zeros[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00};
  static const uint8_t two_streams[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00,
                                        0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
  const uint8_t *after[] = {two_zeros, two_streams};
  size_t after_len[] = {sizeof two_zeros, sizeof two_streams};
  for (int i = 0; i < 2; i++) {
    rx = open_pmd(&none15, true, NULL);
    assert_int_equal(inflate_bytes(rx, after[i], after_len[i], text, sizeof text), -EPROTO);
    ws_pmd_close(rx);
  }
}

/* ---- Round trips --------------------------------------------------------------------- */

/* Deflates msg in pieces of `piece` bytes (0: whole), appending to comp. */
static void deflate_pieces(ws_pmd_t *d, const uint8_t *msg, size_t len, size_t piece,
                           ws_buf_t *comp) {
  size_t step = piece ? piece : len, off = 0;
  do {
    size_t n = len - off < step ? len - off : step;
    assert_int_equal(ws_pmd_deflate(d, msg + off, n, off + n == len, comp), 0);
    off += n;
  } while (off < len);
}

typedef struct trip_stats {
  size_t messages, plain, compressed;
} trip_stats_t;

/* Sends msg from `from` to `to`: deflated in pieces, inflated in pieces,
 * into a buffer whose max is the message's size (exactly enough). */
static void trip(ws_pmd_t *from, ws_pmd_t *to, const uint8_t *msg, size_t len, size_t dpiece,
                 size_t ipiece, trip_stats_t *st) {
  ws_buf_t comp = {0}, plain = {0};
  deflate_pieces(from, msg, len, dpiece, &comp);
  assert_true(comp.len >= 1);
  size_t step = ipiece ? ipiece : comp.len, off = 0;
  do {
    size_t n = comp.len - off < step ? comp.len - off : step;
    int rc = ws_pmd_inflate(to, comp.p + off, n, off + n == comp.len, &plain, len);
    if (rc != 0)
      fprintf(stderr, "# %zu bytes (%zu compressed): %d at %zu\n", len, comp.len, rc, off);
    assert_int_equal(rc, 0);
    off += n;
  } while (off < comp.len);
  assert_int_equal(plain.len, len);
  assert_true(plain.cap <= len);
  if (len)
    assert_memory_equal(plain.p, msg, len);
  st->messages++;
  st->plain += len;
  st->compressed += comp.len;
  ws_buf_free(&comp);
  ws_buf_free(&plain);
}

/* Messages of every size and kind both ways under p; a direction without
 * context takeover holds nothing between messages. */
static void round_trips(const ws_pmd_params_t *p, ws_pmd_cache_t *cache, size_t max_size,
                        trip_stats_t *st) {
  static const size_t sizes[] = {0,    1,     2,     125,   126,    127,    1000,
                                 4096, 65535, 65536, 65537, 300000, 1 << 20};
  ws_pmd_t *server = open_pmd(p, true, cache), *client = open_pmd(p, false, cache);
  uint8_t *msg = malloc(max_size ? max_size : 1);
  assert_non_null(msg);
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0] && sizes[s] <= max_size; s++)
    for (int kind = 0; kind < DATA_KINDS; kind++) {
      size_t len = sizes[s];
      fill(msg, len, kind);
      size_t dpiece = (s + (size_t)kind) % 3 == 0 ? 0 : 1 + rng() % (len + 1);
      size_t ipiece = (s + (size_t)kind) % 4 == 0 ? 0 : 1 + rng() % 1500;
      trip(server, client, msg, len, dpiece, ipiece, st);
      trip(client, server, msg, len, ipiece, dpiece, st);
      if (p->server_no_context_takeover && p->client_no_context_takeover) {
        assert_int_equal(ws_pmd_held(server), 0);
        assert_int_equal(ws_pmd_held(client), 0);
      } else if (len > 0) {
        assert_true(ws_pmd_held(server) > 0);
        assert_true(ws_pmd_held(client) > 0);
      }
    }
  free(msg);
  ws_pmd_close(server);
  ws_pmd_close(client);
}

static void test_round_trips(void **state) {
  (void)state;
  ws_pmd_cache_t *cache = NULL;
  assert_int_equal(ws_pmd_cache_open(&cache), 0);
  trip_stats_t st = {0};
  for (int bits = 8; bits <= 15; bits++)
    for (int nct = 0; nct < 4; nct++) {
      ws_pmd_params_t p = {nct & 1, nct >> 1, bits, 23 - bits};
      bool big = bits == 15 || (bits == 8 && nct == 0);
      round_trips(&p, nct % 2 ? cache : NULL, big ? 1 << 20 : 65537, &st);
    }
  fprintf(stderr, "# %zu messages, %zu bytes, %zu compressed\n", st.messages, st.plain,
          st.compressed);
  ws_pmd_cache_close(cache);
}

/* Context takeover shows: the same message again compresses to a few
 * bytes, and without it, to the same size as the first time. */
static void test_takeover_effect(void **state) {
  (void)state;
  uint8_t msg[4000];
  fill(msg, sizeof msg, DATA_RANDOM);
  size_t sizes[2][3];
  const ws_pmd_params_t *ps[2] = {&takeover15, &none15};
  for (int i = 0; i < 2; i++) {
    ws_pmd_t *tx = open_pmd(ps[i], false, NULL), *rx = open_pmd(ps[i], true, NULL);
    for (int m = 0; m < 3; m++) {
      ws_buf_t comp = {0}, plain = {0};
      assert_int_equal(ws_pmd_deflate(tx, msg, sizeof msg, true, &comp), 0);
      sizes[i][m] = comp.len;
      assert_int_equal(ws_pmd_inflate(rx, comp.p, comp.len, true, &plain, sizeof msg), 0);
      assert_memory_equal(plain.p, msg, sizeof msg);
      ws_buf_free(&comp);
      ws_buf_free(&plain);
    }
    ws_pmd_close(tx);
    ws_pmd_close(rx);
  }
  assert_true(sizes[0][0] > sizeof msg);
  assert_true(sizes[0][1] < 100 && sizes[0][2] < 100);
  assert_int_equal(sizes[1][1], sizes[1][0]);
  assert_int_equal(sizes[1][2], sizes[1][0]);
}

/* Every byte alone, both ways, over several messages with takeover; a
 * piece of 0 bytes (fin alone) ends a message too. */
static void test_byte_at_a_time(void **state) {
  (void)state;
  for (int variant = 0; variant < 2; variant++) {
    const ws_pmd_params_t *p = variant ? &none15 : &takeover15;
    ws_pmd_t *tx = open_pmd(p, true, NULL), *rx = open_pmd(p, false, NULL);
    for (int m = 0; m < 4; m++) {
      size_t len = m == 3 ? 0 : 3000 + (size_t)m * 1000;
      uint8_t *msg = malloc(len + 1);
      fill(msg, len, m == 1 ? DATA_RANDOM : DATA_TEXT);
      ws_buf_t comp = {0}, plain = {0};
      for (size_t i = 0; i < len; i++)
        assert_int_equal(ws_pmd_deflate(tx, msg + i, 1, false, &comp), 0);
      assert_int_equal(ws_pmd_deflate(tx, NULL, 0, true, &comp), 0);
      for (size_t i = 0; i < comp.len; i++)
        assert_int_equal(ws_pmd_inflate(rx, comp.p + i, 1, false, &plain, len), 0);
      assert_int_equal(ws_pmd_inflate(rx, NULL, 0, true, &plain, len), 0);
      assert_int_equal(plain.len, len);
      if (len)
        assert_memory_equal(plain.p, msg, len);
      ws_buf_free(&comp);
      ws_buf_free(&plain);
      free(msg);
    }
    ws_pmd_close(tx);
    ws_pmd_close(rx);
  }
}

/* A compressor agreed to 8 bits runs zlib's 9, which looks back 250 bytes
 * at most: an inflater of 8 bits fed a byte at a time (so that distances
 * reach into its window, not into what the same call wrote) takes all it
 * sends. From a compressor of 10 bits it does not: the check is real. */
static void test_window8(void **state) {
  (void)state;
  size_t len = 65536;
  uint8_t *msg = malloc(len);
  fill(msg, len, DATA_REPEATS);
  for (int sender_bits = 8; sender_bits <= 10; sender_bits += 2) {
    ws_pmd_params_t sent = {true, true, sender_bits, 15}, agreed = {true, true, 8, 15};
    ws_pmd_t *tx = open_pmd(&sent, true, NULL), *rx = open_pmd(&agreed, false, NULL);
    ws_buf_t comp = {0}, plain = {0};
    assert_int_equal(ws_pmd_deflate(tx, msg, len, true, &comp), 0);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < comp.len; i++)
      rc = ws_pmd_inflate(rx, comp.p + i, 1, i + 1 == comp.len, &plain, len);
    if (sender_bits == 8) {
      assert_int_equal(rc, 0);
      assert_int_equal(plain.len, len);
      assert_memory_equal(plain.p, msg, len);
    } else {
      assert_int_equal(rc, -EPROTO);
    }
    ws_buf_free(&comp);
    ws_buf_free(&plain);
    ws_pmd_close(tx);
    ws_pmd_close(rx);
  }
  free(msg);
}

/* ---- Bombs ------------------------------------------------------------------------ */

/* Inflater state at 15 bits: zlib's (about 7 KiB) and the window. */
#define INFLATER_BOUND ((size_t)48 * 1024)

static void test_bomb_zeros(void **state) {
  (void)state;
  size_t big = (size_t)10 << 20, max = (size_t)1 << 20;
  uint8_t *zeros = calloc(1, big);
  assert_non_null(zeros);
  ws_pmd_t *tx = open_pmd(&none15, false, NULL);
  ws_buf_t comp = {0};
  assert_int_equal(ws_pmd_deflate(tx, zeros, big, true, &comp), 0);
  fprintf(stderr, "# 10 MiB of zeros: %zu bytes compressed\n", comp.len);
  assert_true(comp.len < 16 * 1024);
  ws_pmd_close(tx);

  /* Whole, or in 1 KiB frames: cut at max, never holding more. */
  for (size_t piece = 0; piece <= 1024; piece += 1024) {
    ws_pmd_t *rx = open_pmd(&none15, true, NULL);
    ws_buf_t out = {0};
    size_t step = piece ? piece : comp.len, off = 0;
    int rc = 0;
    while (rc == 0 && off < comp.len) {
      size_t n = comp.len - off < step ? comp.len - off : step;
      rc = ws_pmd_inflate(rx, comp.p + off, n, off + n == comp.len, &out, max);
      assert_true(ws_pmd_held(rx) <= INFLATER_BOUND);
      off += n;
    }
    assert_int_equal(rc, -EMSGSIZE);
    assert_int_equal(out.len, max);
    assert_true(out.cap <= max);
    assert_memory_equal(out.p, zeros, max);
    /* The error stays, and nothing is held after it. */
    assert_int_equal(ws_pmd_inflate(rx, comp.p, 1, true, &out, max), -EMSGSIZE);
    assert_int_equal(ws_pmd_held(rx), 0);
    ws_buf_free(&out);
    ws_pmd_close(rx);
  }

  /* Exactly max fits; a byte less does not. */
  ws_pmd_t *rx = open_pmd(&takeover15, true, NULL);
  ws_buf_t out = {0};
  assert_int_equal(ws_pmd_inflate(rx, comp.p, comp.len, true, &out, big), 0);
  assert_int_equal(out.len, big);
  assert_true(out.cap <= big);
  ws_pmd_close(rx);
  rx = open_pmd(&takeover15, true, NULL);
  out.len = 0;
  assert_int_equal(ws_pmd_inflate(rx, comp.p, comp.len, true, &out, big - 1), -EMSGSIZE);
  assert_int_equal(out.len, big - 1);
  ws_pmd_close(rx);
  ws_buf_free(&out);
  ws_buf_free(&comp);
  free(zeros);
}

/* A stream of unbounded size from one small piece fed again and again:
 * 1 MiB of zeros whose deflate refers only to zeros before it, so it may
 * follow itself for ever. */
static void zeros_piece(ws_buf_t *prime, ws_buf_t *piece) {
  size_t mib = (size_t)1 << 20;
  uint8_t *zeros = calloc(1, mib);
  assert_non_null(zeros);
  z_stream z = {0};
  assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  ws_buf_t *bufs[2] = {prime, piece};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(ws_buf_reserve(bufs[i], 64 * 1024, SIZE_MAX), 0);
    z.next_in = zeros;
    z.avail_in = (uInt)mib;
    z.next_out = bufs[i]->p;
    z.avail_out = (uInt)bufs[i]->cap;
    assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
    assert_int_equal(z.avail_in, 0);
    assert_true(z.avail_out > 0);
    bufs[i]->len = bufs[i]->cap - z.avail_out;
  }
  deflateEnd(&z);
  free(zeros);
}

static void test_bomb_stream(void **state) {
  (void)state;
  ws_buf_t prime = {0}, piece = {0};
  zeros_piece(&prime, &piece);
  fprintf(stderr, "# 1 MiB of zeros again: %zu bytes\n", piece.len);

  /* 4 GiB announced in frames of ~1 KiB; max 16 MiB. */
  size_t max = (size_t)16 << 20;
  ws_pmd_t *rx = open_pmd(&takeover15, true, NULL);
  ws_buf_t out = {0};
  int rc = ws_pmd_inflate(rx, prime.p, prime.len, false, &out, max);
  size_t fed = 1;
  for (; rc == 0 && fed < 4096; fed++) {
    rc = ws_pmd_inflate(rx, piece.p, piece.len, false, &out, max);
    assert_true(ws_pmd_held(rx) <= INFLATER_BOUND);
  }
  assert_int_equal(rc, -EMSGSIZE);
  assert_int_equal(fed, 17);
  assert_int_equal(out.len, max);
  assert_true(out.cap <= max);
  ws_buf_free(&out);
  ws_pmd_close(rx);

  /* The same stream read as it comes (each piece's output taken away):
   * 512 MiB through a buffer of 1 MiB plus a chunk, with the same state. */
  rx = open_pmd(&takeover15, true, NULL);
  max = ((size_t)1 << 20) + 4096;
  assert_int_equal(ws_pmd_inflate(rx, prime.p, prime.len, false, &out, max), 0);
  size_t held = ws_pmd_held(rx), total = out.len;
  int pieces = KT_SANITIZED ? 127 : 511;
  for (int i = 0; i < pieces; i++) {
    bool fin = i == pieces - 1; /* the last piece without its flush's 00 00 ff ff */
    out.len = 0;
    assert_int_equal(ws_pmd_inflate(rx, piece.p, piece.len - (fin ? 4 : 0), fin, &out, max), 0);
    assert_int_equal(out.len, (size_t)1 << 20);
    assert_int_equal(ws_pmd_held(rx), held);
    total += out.len;
  }
  assert_true(out.cap <= max);
  fprintf(stderr, "# %zu MiB inflated through %zu bytes of buffer, %zu of state\n", total >> 20,
          out.cap, held);
  ws_buf_free(&out);
  ws_pmd_close(rx);
  ws_buf_free(&prime);
  ws_buf_free(&piece);
}

/* ---- Corrupt input -------------------------------------------------------------- */

static void test_corrupt(void **state) {
  (void)state;
  static const struct {
    uint8_t bytes[8];
    size_t len;
    bool fin; /* the error shows only at the message's end */
  } cases[] = {
      {{0x07}, 1, false},                         /* BTYPE 11 (reserved) */
      {{0x00, 0x05, 0x00, 0x00, 0x00}, 5, false}, /* stored: NLEN not ~LEN */
      {{0x04, 0xff, 0xff, 0xff}, 4, false},       /* dynamic: 32 distance codes */
      {{0xf2, 0x00, 0x11, 0x00, 0x00}, 5, false}, /* a distance before the start */
      {{0xf2, 0x48, 0xcd}, 3, true},              /* "Hello" cut inside its block */
      {{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07}, 6, true},
      {{0x00, 0x00, 0x00, 0xff, 0xff, 0x02}, 6, true}, /* a block begun after a flush */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int takeover = 0; takeover < 2; takeover++) {
      ws_pmd_t *rx = open_pmd(takeover ? &takeover15 : &none15, true, NULL);
      ws_buf_t out = {0};
      int rc = ws_pmd_inflate(rx, cases[i].bytes, cases[i].len, false, &out, 1 << 20);
      if (cases[i].fin) {
        assert_int_equal(rc, 0);
        rc = ws_pmd_inflate(rx, NULL, 0, true, &out, 1 << 20);
      }
      if (rc != -EPROTO)
        fprintf(stderr, "# case %zu: %d\n", i, rc);
      assert_int_equal(rc, -EPROTO);
      assert_int_equal(ws_pmd_inflate(rx, cases[i].bytes, 1, true, &out, 1 << 20), -EPROTO);
      assert_int_equal(ws_pmd_held(rx), 0);
      ws_buf_free(&out);
      ws_pmd_close(rx);
    }

  /* Random bytes, and good messages with bytes flipped: an error or some
   * output within max, never more. */
  uint8_t msg[2048];
  size_t results[3] = {0};
  for (int i = 0; i < 3000; i++) {
    size_t len = 1 + rng() % sizeof msg;
    ws_pmd_t *rx = open_pmd(i % 2 ? &takeover15 : &none15, true, NULL);
    if (i % 3 == 0) {
      fill(msg, len, DATA_RANDOM);
    } else {
      ws_pmd_t *tx = open_pmd(&none15, false, NULL);
      uint8_t plain[2048];
      fill(plain, len, DATA_TEXT);
      ws_buf_t comp = {0};
      assert_int_equal(ws_pmd_deflate(tx, plain, len, true, &comp), 0);
      len = comp.len;
      memcpy(msg, comp.p, len);
      msg[rng() % len] ^= (uint8_t)(1u << rng() % 8);
      ws_buf_free(&comp);
      ws_pmd_close(tx);
    }
    ws_buf_t out = {0};
    int rc = ws_pmd_inflate(rx, msg, len, true, &out, 4096);
    assert_true(rc == 0 || rc == -EPROTO || rc == -EMSGSIZE);
    assert_true(out.len <= 4096 && out.cap <= 4096);
    results[rc == 0 ? 0 : rc == -EPROTO ? 1 : 2]++;
    ws_buf_free(&out);
    ws_pmd_close(rx);
  }
  fprintf(stderr, "# damaged input: %zu inflated, %zu -EPROTO, %zu -EMSGSIZE\n", results[0],
          results[1], results[2]);
  assert_true(results[1] > 1000);
}

/* ---- The cache --------------------------------------------------------------------- */

static void test_cache(void **state) {
  (void)state;
  ws_pmd_cache_t *cache = NULL;
  assert_int_equal(ws_pmd_cache_open(&cache), 0);
  assert_int_equal(ws_pmd_cache_held(cache), 0);
  uint8_t msg[3000];
  fill(msg, sizeof msg, DATA_TEXT);

  /* A message borrows the compressor and gives it back; the next one takes
   * the very same bytes from the cache. */
  ws_pmd_t *a = open_pmd(&none15, true, cache), *b = open_pmd(&none15, false, cache);
  ws_buf_t comp = {0}, plain = {0};
  assert_int_equal(ws_pmd_deflate(a, msg, sizeof msg, true, &comp), 0);
  size_t first_len = comp.len;
  assert_int_equal(ws_pmd_held(a), 0);
  size_t compressor = ws_pmd_cache_held(cache);
  assert_true(compressor > 256 * 1024);
  assert_int_equal(ws_pmd_deflate(a, msg, 100, false, &comp), 0);
  assert_int_equal(ws_pmd_held(a), compressor);
  assert_int_equal(ws_pmd_cache_held(cache), 0);
  assert_int_equal(ws_pmd_deflate(a, msg + 100, sizeof msg - 100, true, &comp), 0);
  assert_int_equal(ws_pmd_cache_held(cache), compressor);

  /* The decompressor likewise (its window, made on first use, is kept). */
  assert_int_equal(ws_pmd_inflate(b, comp.p, first_len, true, &plain, 1 << 20), 0);
  size_t both = ws_pmd_cache_held(cache);
  size_t decompressor = both - compressor;
  assert_true(decompressor > 32 * 1024);
  plain.len = 0;
  assert_int_equal(ws_pmd_inflate(b, comp.p + first_len, 1, false, &plain, 1 << 20), 0);
  assert_int_equal(ws_pmd_held(b), decompressor);
  assert_int_equal(ws_pmd_cache_held(cache), compressor);
  assert_int_equal(
      ws_pmd_inflate(b, comp.p + first_len + 1, comp.len - first_len - 1, true, &plain, 1 << 20),
      0);
  assert_memory_equal(plain.p, msg, sizeof msg);
  assert_int_equal(ws_pmd_cache_held(cache), both);
  /* An error gives the state back too. */
  static const uint8_t reserved_type = 0x07;
  assert_int_equal(ws_pmd_inflate(b, &reserved_type, 1, false, &plain, 1 << 20), -EPROTO);
  assert_int_equal(ws_pmd_held(b), 0);
  assert_int_equal(ws_pmd_cache_held(cache), both);
  ws_pmd_close(b);
  ws_buf_free(&plain);

  /* At most WS_PMD_CACHE_MAX (8) idle streams: twelve in use at once, then
   * given back. */
  ws_pmd_t *many[12];
  for (int i = 0; i < 12; i++) {
    many[i] = open_pmd(&none15, true, cache);
    assert_int_equal(ws_pmd_deflate(many[i], msg, 10, false, &comp), 0);
    assert_int_equal(ws_pmd_held(many[i]), compressor);
  }
  assert_int_equal(ws_pmd_cache_held(cache), decompressor);
  for (int i = 0; i < 12; i++) {
    assert_int_equal(ws_pmd_deflate(many[i], NULL, 0, true, &comp), 0);
    ws_pmd_close(many[i]);
  }
  assert_int_equal(ws_pmd_cache_held(cache), 8 * compressor);

  /* Streams with context takeover go to the cache when their connection
   * closes (the least recently given back leave it). */
  ws_pmd_t *keep = open_pmd(&takeover15, true, cache);
  assert_int_equal(ws_pmd_deflate(keep, msg, sizeof msg, true, &comp), 0);
  assert_int_equal(ws_pmd_held(keep), compressor);
  assert_int_equal(ws_pmd_cache_held(cache), 7 * compressor);
  ws_pmd_close(keep);
  assert_int_equal(ws_pmd_cache_held(cache), 8 * compressor);

  /* Other windows and levels are other keys. */
  ws_pmd_params_t small = {true, true, 9, 9};
  ws_pmd_t *c = NULL;
  assert_int_equal(ws_pmd_open(&small, true, 1, 1, cache, &c), 0);
  assert_int_equal(ws_pmd_deflate(c, msg, 10, false, &comp), 0);
  assert_true(ws_pmd_held(c) < compressor / 8);
  assert_int_equal(ws_pmd_cache_held(cache), 8 * compressor);
  ws_pmd_close(c);
  assert_true(ws_pmd_cache_held(cache) < 8 * compressor);

  ws_pmd_close(a);
  ws_buf_free(&comp);
  ws_pmd_cache_close(cache);
  ws_pmd_cache_close(NULL);
  ws_pmd_close(NULL);
}

static void test_open_invalid(void **state) {
  (void)state;
  ws_pmd_t *d = (ws_pmd_t *)&d;
  ws_pmd_params_t bad_bits[] = {{0, 0, 7, 15}, {0, 0, 15, 16}, {0, 0, -1, 15}};
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(ws_pmd_open(&bad_bits[i], true, 0, 0, NULL, &d), -EINVAL);
    assert_null(d);
  }
  assert_int_equal(ws_pmd_open(&none15, true, 10, 0, NULL, &d), -EINVAL);
  assert_int_equal(ws_pmd_open(&none15, true, -1, 0, NULL, &d), -EINVAL);
  assert_int_equal(ws_pmd_open(&none15, true, 0, 10, NULL, &d), -EINVAL);
  /* 0 windows: 15 */
  ws_pmd_params_t zero = {0};
  assert_int_equal(ws_pmd_open(&zero, true, 0, 0, NULL, &d), 0);
  send_one(d, d, (const uint8_t *)"abcabcabc", 9, 0);
  ws_pmd_close(d);
}

/* ---- Memory per connection ------------------------------------------------------ */

/* What a connection holds after a message of 64 KiB each way (idle), and
 * at most during one. */
static void measure(const ws_pmd_params_t *p, int mem_level, size_t *idle, size_t *peak) {
  ws_pmd_t *server = NULL, *client = open_pmd(p, false, NULL);
  assert_int_equal(ws_pmd_open(p, true, 0, mem_level, NULL, &server), 0);
  size_t len = 65536;
  uint8_t *msg = malloc(len);
  fill(msg, len, DATA_TEXT);
  ws_buf_t comp = {0}, plain = {0};
  *peak = 0;
  /* server → client, then client → server, each in two pieces */
  assert_int_equal(ws_pmd_deflate(server, msg, len / 2, false, &comp), 0);
  *peak = ws_pmd_held(server);
  assert_int_equal(ws_pmd_deflate(server, msg + len / 2, len / 2, true, &comp), 0);
  assert_int_equal(ws_pmd_inflate(client, comp.p, comp.len, true, &plain, len), 0);
  comp.len = plain.len = 0;
  assert_int_equal(ws_pmd_deflate(client, msg, len, true, &comp), 0);
  assert_int_equal(ws_pmd_inflate(server, comp.p, comp.len / 2, false, &plain, len), 0);
  if (ws_pmd_held(server) > *peak)
    *peak = ws_pmd_held(server);
  assert_int_equal(
      ws_pmd_inflate(server, comp.p + comp.len / 2, comp.len - comp.len / 2, true, &plain, len), 0);
  assert_memory_equal(plain.p, msg, len);
  *idle = ws_pmd_held(server);
  ws_buf_free(&comp);
  ws_buf_free(&plain);
  free(msg);
  ws_pmd_close(server);
  ws_pmd_close(client);
}

static void test_memory(void **state) {
  (void)state;
  size_t idle, peak;
  fprintf(stderr, "# a server connection's zlib state (ws_pmd_held), level 6:\n");
  fprintf(stderr, "#   compressor with context takeover (client's without):\n");
  for (int bits = 8; bits <= 15; bits++) {
    ws_pmd_params_t p = {false, true, bits, 15};
    measure(&p, 8, &idle, &peak);
    fprintf(stderr, "#     window %2d, mem_level 8: %7zu bytes (during a message %zu)\n", bits,
            idle, peak);
    size_t zlib_window = (size_t)1 << (bits == 8 ? 9 : bits);
    assert_true(idle >= 4 * zlib_window + 128 * 1024 && idle <= 4 * zlib_window + 136 * 1024);
  }
  for (int mem = 1; mem <= 9; mem += 4) {
    ws_pmd_params_t p = {false, true, 15, 15};
    measure(&p, mem, &idle, &peak);
    fprintf(stderr, "#     window 15, mem_level %d: %7zu bytes\n", mem, idle);
  }
  fprintf(stderr, "#   decompressor with context takeover (server's compressor without):\n");
  for (int bits = 8; bits <= 15; bits++) {
    ws_pmd_params_t p = {true, false, 15, bits};
    measure(&p, 8, &idle, &peak);
    fprintf(stderr, "#     window %2d: %7zu bytes\n", bits, idle);
    assert_true(idle >= ((size_t)1 << bits) && idle <= ((size_t)1 << bits) + 8 * 1024);
  }
  ws_pmd_params_t both = {false, false, 15, 15};
  measure(&both, 8, &idle, &peak);
  fprintf(stderr, "#   both with context takeover, 15 and 15: %zu bytes\n", idle);
  measure(&none15, 8, &idle, &peak);
  fprintf(stderr,
          "#   no context takeover either way (keel's default with a client that "
          "offers client_no_context_takeover): idle %zu, during a message %zu\n",
          idle, peak);
  assert_int_equal(idle, 0);
  ws_pmd_params_t dflt = {true, false, 15, 15};
  measure(&dflt, 8, &idle, &peak);
  fprintf(stderr, "#   keel's default answer (server_no_context_takeover), 15: idle %zu\n", idle);
  fprintf(stderr, "#   (ws_pmd_t itself is not counted; the cache keeps up to 8 idle streams "
                  "per worker)\n");
}

/* ---- Interop with Python's zlib ---------------------------------------------------- */

/* The peer: reads messages (4-byte length, then the bytes) that keel
 * compressed, inflates them as RFC 7692 says (keeping the window when
 * asked), checks them against the plain text that follows each, and
 * answers each with its own compression of the same text. */
static const char py_peer[] =
    "import sys, zlib, struct\n"
    "bits, keep = int(sys.argv[1]), sys.argv[2] == '1'\n"
    "data = open(sys.argv[3], 'rb').read(); out = open(sys.argv[4], 'wb')\n"
    "d = zlib.decompressobj(-bits); c = zlib.compressobj(6, zlib.DEFLATED, -bits)\n"
    "i = 0\n"
    "while i < len(data):\n"
    "    n, = struct.unpack('>I', data[i:i+4]); comp = data[i+4:i+4+n]; i += 4 + n\n"
    "    n, = struct.unpack('>I', data[i:i+4]); plain = data[i+4:i+4+n]; i += 4 + n\n"
    "    if not keep: d = zlib.decompressobj(-bits); c = zlib.compressobj(6, zlib.DEFLATED, "
    "-bits)\n"
    "    if d.decompress(comp + b'\\x00\\x00\\xff\\xff') != plain: sys.exit('mismatch')\n"
    "    z = c.compress(plain) + c.flush(zlib.Z_SYNC_FLUSH)\n"
    "    assert z.endswith(b'\\x00\\x00\\xff\\xff'); z = z[:-4]\n"
    "    out.write(struct.pack('>I', len(z)) + z)\n";

static void put_record(FILE *f, const uint8_t *p, size_t len) {
  uint8_t head[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
  assert_int_equal(fwrite(head, 1, 4, f), 4);
  if (len)
    assert_int_equal(fwrite(p, 1, len, f), len);
}

static void python_round(int bits, bool keep, const char *dir) {
  char to_py[256], from_py[256], cmd[1024];
  snprintf(to_py, sizeof to_py, "%s/to_py", dir);
  snprintf(from_py, sizeof from_py, "%s/from_py", dir);
  ws_pmd_params_t p = {!keep, !keep, bits, bits};
  ws_pmd_t *tx = open_pmd(&p, true, NULL), *rx = open_pmd(&p, true, NULL);
  static const size_t sizes[] = {0, 1, 5, 125, 126, 1000, 70000, 0, 100000};
  uint8_t *msgs[9];
  FILE *f = fopen(to_py, "wb");
  assert_non_null(f);
  for (int i = 0; i < 9; i++) {
    msgs[i] = malloc(sizes[i] + 1);
    fill(msgs[i], sizes[i], i % 3 == 2 ? DATA_RANDOM : DATA_TEXT);
    ws_buf_t comp = {0};
    assert_int_equal(ws_pmd_deflate(tx, msgs[i], sizes[i], true, &comp), 0);
    put_record(f, comp.p, comp.len);
    put_record(f, msgs[i], sizes[i]);
    ws_buf_free(&comp);
  }
  fclose(f);
  snprintf(cmd, sizeof cmd, "python3 %s/peer.py %d %d %s %s", dir, bits, keep, to_py, from_py);
  assert_int_equal(system(cmd), 0);
  f = fopen(from_py, "rb");
  assert_non_null(f);
  for (int i = 0; i < 9; i++) {
    uint8_t head[4];
    assert_int_equal(fread(head, 1, 4, f), 4);
    size_t len = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
    uint8_t *comp = malloc(len + 1);
    assert_int_equal(fread(comp, 1, len, f), len);
    ws_buf_t plain = {0};
    assert_int_equal(ws_pmd_inflate(rx, comp, len, true, &plain, sizes[i]), 0);
    assert_int_equal(plain.len, sizes[i]);
    if (sizes[i])
      assert_memory_equal(plain.p, msgs[i], sizes[i]);
    ws_buf_free(&plain);
    free(comp);
    free(msgs[i]);
  }
  fclose(f);
  ws_pmd_close(tx);
  ws_pmd_close(rx);
}

static void test_python_interop(void **state) {
  (void)state;
  if (system("python3 -c 'import zlib' >/dev/null 2>&1") != 0) {
    fprintf(stderr, "# python3 with zlib not found: interop not tested\n");
    skip();
  }
  char dir[] = "/tmp/keel-ws-deflate-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/peer.py", dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(py_peer, f);
  fclose(f);
  /* Python's zlib refuses a raw window of 8 bits, as keel's compressor does. */
  python_round(15, true, dir);
  python_round(15, false, dir);
  python_round(9, true, dir);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_server_table),   cmocka_unit_test(test_server_syntax),
      cmocka_unit_test(test_combinations),   cmocka_unit_test(test_client_offer),
      cmocka_unit_test(test_client_accept),  cmocka_unit_test(test_rfc_examples),
      cmocka_unit_test(test_round_trips),    cmocka_unit_test(test_takeover_effect),
      cmocka_unit_test(test_byte_at_a_time), cmocka_unit_test(test_window8),
      cmocka_unit_test(test_bomb_zeros),     cmocka_unit_test(test_bomb_stream),
      cmocka_unit_test(test_corrupt),        cmocka_unit_test(test_cache),
      cmocka_unit_test(test_open_invalid),   cmocka_unit_test(test_memory),
      cmocka_unit_test(test_python_interop),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
