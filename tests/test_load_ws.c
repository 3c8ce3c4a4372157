/* keel-load's WebSocket wire format (tools/keel-load/wsframe.c): headers
 * round-trip at every length encoding's edges and match RFC 6455's own
 * examples, non-shortest lengths are refused, masking in 64-bit words
 * equals masking byte by byte at every phase and alignment, the accept
 * key is RFC 6455's, and the 101 check passes a good response and names
 * what is wrong with a bad one. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "wsframe.h"

static void test_rfc_examples(void **state) {
  (void)state;
  /* RFC 6455 §5.7: "Hello", unmasked and masked with 37 fa 21 3d. */
  static const uint8_t unmasked[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
  static const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                   0x7f, 0x9f, 0x4d, 0x51, 0x58};
  static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
  uint8_t out[WSF_MAX_HEADER + 5];
  size_t h = wsf_put_header(out, true, WSF_TEXT, 5, NULL);
  assert_int_equal(h, 2);
  memcpy(out + h, "Hello", 5);
  assert_memory_equal(out, unmasked, sizeof unmasked);
  h = wsf_put_header(out, true, WSF_TEXT, 5, mask);
  assert_int_equal(h, 6);
  wsf_mask(out + h, (const uint8_t *)"Hello", 5, mask, 0);
  assert_memory_equal(out, masked, sizeof masked);

  wsf_header_t f;
  assert_int_equal(wsf_parse_header(masked, sizeof masked, &f), 6);
  assert_true(f.fin);
  assert_true(f.masked);
  assert_int_equal(f.opcode, WSF_TEXT);
  assert_int_equal(f.rsv, 0);
  assert_int_equal(f.payload_len, 5);
  assert_memory_equal(f.mask, mask, 4);
  uint8_t text[5];
  wsf_mask(text, masked + 6, 5, f.mask, 0);
  assert_memory_equal(text, "Hello", 5);
  /* 256 bytes and 64 KiB, unmasked binary (§5.7). */
  static const uint8_t len256[] = {0x82, 0x7e, 0x01, 0x00};
  static const uint8_t len64k[] = {0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00};
  assert_int_equal(wsf_put_header(out, true, WSF_BINARY, 256, NULL), 4);
  assert_memory_equal(out, len256, 4);
  assert_int_equal(wsf_put_header(out, true, WSF_BINARY, 65536, NULL), 10);
  assert_memory_equal(out, len64k, 10);
}

static void test_header_round_trip(void **state) {
  (void)state;
  static const uint64_t lens[] = {
      0, 1, 125, 126, 127, 65535, 65536, 16384, UINT64_C(1) << 40, (UINT64_C(1) << 63) - 1};
  static const size_t want_len[] = {2, 2, 2, 4, 4, 4, 10, 4, 10, 10};
  static const uint8_t mask[4] = {1, 2, 3, 4};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    for (int m = 0; m < 2; m++) {
      uint8_t out[WSF_MAX_HEADER];
      size_t h =
          wsf_put_header(out, m == 0, m ? WSF_CONTINUATION : WSF_BINARY, lens[i], m ? mask : NULL);
      assert_int_equal(h, want_len[i] + (m ? 4 : 0));
      wsf_header_t f;
      for (size_t cut = 0; cut < h; cut++) /* a header cut short: more bytes wanted */
        assert_int_equal(wsf_parse_header(out, cut, &f), 0);
      assert_int_equal(wsf_parse_header(out, h, &f), (int)h);
      assert_int_equal(f.payload_len, lens[i]);
      assert_int_equal(f.fin, m == 0);
      assert_int_equal(f.masked, m == 1);
      assert_int_equal(f.opcode, m ? WSF_CONTINUATION : WSF_BINARY);
      if (m)
        assert_memory_equal(f.mask, mask, 4);
    }
  }
}

static void test_header_refuses_long_forms(void **state) {
  (void)state;
  wsf_header_t f;
  static const uint8_t short_in_16[] = {0x82, 0x7e, 0x00, 0x7d};                   /* 125 */
  static const uint8_t short_in_64[] = {0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff}; /* 65535 */
  static const uint8_t top_bit[] = {0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0};
  assert_int_equal(wsf_parse_header(short_in_16, sizeof short_in_16, &f), -EPROTO);
  assert_int_equal(wsf_parse_header(short_in_64, sizeof short_in_64, &f), -EPROTO);
  assert_int_equal(wsf_parse_header(top_bit, sizeof top_bit, &f), -EPROTO);
  /* Reserved bits and opcodes are reported, for the caller to judge. */
  static const uint8_t rsv[] = {0x7b, 0x00};
  assert_int_equal(wsf_parse_header(rsv, sizeof rsv, &f), 2);
  assert_false(f.fin);
  assert_int_equal(f.rsv, 7);
  assert_int_equal(f.opcode, 0xb);
}

static void test_mask_matches_bytewise(void **state) {
  (void)state;
  uint8_t src[300], dst[300], want[300];
  static const uint8_t mask[4] = {0xa5, 0x3c, 0x0f, 0xe1};
  for (size_t i = 0; i < sizeof src; i++)
    src[i] = (uint8_t)(i * 7 + 3);
  for (size_t start = 0; start < 9; start++) /* unaligned sources and destinations */
    for (size_t len = 0; len + start <= 64 + 9; len++)
      for (uint64_t phase = 0; phase < 8; phase++) {
        for (size_t i = 0; i < len; i++)
          want[i] = src[start + i] ^ mask[(phase + i) % 4];
        wsf_mask(dst + (start ^ 3), src + start, len, mask, phase);
        assert_memory_equal(dst + (start ^ 3), want, len);
      }
  /* In place, in pieces: the same as in one go. */
  uint8_t whole[300], pieces[300];
  wsf_mask(whole, src, sizeof src, mask, 0);
  memcpy(pieces, src, sizeof src);
  size_t cuts[] = {0, 5, 6, 77, 128, 129, 300};
  for (size_t i = 0; i + 1 < sizeof cuts / sizeof cuts[0]; i++)
    wsf_mask(pieces + cuts[i], pieces + cuts[i], cuts[i + 1] - cuts[i], mask, cuts[i]);
  assert_memory_equal(pieces, whole, sizeof whole);
  wsf_mask(pieces, pieces, sizeof pieces, mask, 0); /* masking twice undoes it */
  assert_memory_equal(pieces, src, sizeof src);
}

static void test_accept_key(void **state) {
  (void)state;
  /* RFC 6455 §1.3: the nonce "the sample nonce". */
  char key[WSF_KEY_LEN + 1], accept[WSF_ACCEPT_LEN + 1];
  wsf_make_key((const uint8_t *)"the sample nonce", key);
  assert_string_equal(key, "dGhlIHNhbXBsZSBub25jZQ==");
  assert_int_equal(wsf_accept_for(key, accept), 0);
  assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_request(void **state) {
  (void)state;
  char req[512];
  int n = wsf_request(req, sizeof req, "127.0.0.1:80", "/", "dGhlIHNhbXBsZSBub25jZQ==");
  assert_true(n > 0);
  assert_int_equal((size_t)n, strlen(req));
  assert_non_null(strstr(req, "GET / HTTP/1.1\r\n"));
  assert_non_null(strstr(req, "\r\nHost: 127.0.0.1:80\r\n"));
  assert_non_null(strstr(req, "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
  assert_non_null(strstr(req, "\r\nSec-WebSocket-Version: 13\r\n"));
  assert_null(strstr(req, "Extensions"));
  assert_int_equal(wsf_head_len(req, (size_t)n), (size_t)n);
  assert_int_equal(wsf_head_len(req, (size_t)n - 1), 0);
  assert_int_equal(wsf_request(req, 40, "127.0.0.1:80", "/", "x"), -ENOSPC);
}

#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static const char *check(const char *head) {
  return wsf_check_response(head, strlen(head), ACCEPT);
}

static void test_response_check(void **state) {
  (void)state;
  assert_null(check("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT "\r\n\r\n"));
  /* Field names and the tokens in any case, lists, spaces around values. */
  assert_null(check("HTTP/1.1 101\r\nupgrade:WebSocket\r\nCONNECTION: keep-alive, upgrade \r\n"
                    "sec-websocket-accept:  " ACCEPT "\r\nServer: x\r\n\r\n"));
  static const struct {
    const char *head, *why;
  } bad[] = {
      {"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
       "the status is not HTTP/1.1 101"},
      {"HTTP/1.1 1010\r\n\r\n", "the status is not HTTP/1.1 101"},
      {"HTTP/1.0 101\r\n\r\n", "the status is not HTTP/1.1 101"},
      {"HTTP/1.1 101\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
       "no Upgrade field"},
      {"HTTP/1.1 101\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
       "no Connection field"},
      {"HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
       "no Sec-WebSocket-Accept field"},
      {"HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOO=\r\n\r\n",
       "wrong Sec-WebSocket-Accept"},
      {"HTTP/1.1 101\r\nUpgrade: h2c\r\n\r\n", "Upgrade is not websocket"},
      {"HTTP/1.1 101\r\nConnection: close\r\n\r\n", "Connection does not name upgrade"},
      {"HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT
       "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
       "an extension that was not offered"},
      {"HTTP/1.1 101\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
       "a subprotocol that was not offered"},
      {"HTTP/1.1 101\r\nUpgrade websocket\r\n\r\n", "a header field without a colon"},
      {"HTTP/1.1 101\r\nUpgrade: websocket\r\n folded\r\n\r\n",
       "a malformed header field (folded or empty name)"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *why = check(bad[i].head);
    assert_non_null(why);
    assert_string_equal(why, bad[i].why);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc_examples),
      cmocka_unit_test(test_header_round_trip),
      cmocka_unit_test(test_header_refuses_long_forms),
      cmocka_unit_test(test_mask_matches_bytewise),
      cmocka_unit_test(test_accept_key),
      cmocka_unit_test(test_request),
      cmocka_unit_test(test_response_check),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
