/* The opening handshake's pieces shared by the server and the client
 * (RFC 6455 §4): the accept key, the key's form, token lists in fields. */
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "handshake.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int keel__ws_accept_key(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx)
    return -ENOMEM;
  int ok = EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) && EVP_DigestUpdate(ctx, key, key_len) &&
           EVP_DigestUpdate(ctx, ws_guid, sizeof ws_guid - 1) &&
           EVP_DigestFinal_ex(ctx, md, &md_len);
  EVP_MD_CTX_free(ctx);
  if (!ok || md_len != 20)
    return -EIO;
  EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 characters and a NUL */
  return 0;
}

static bool b64_char(unsigned char ch) {
  return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
         ch == '+' || ch == '/';
}

/* 16 bytes in base64: 22 characters, "==", and the last character's low
 * four bits zero (the canonical form). */
bool keel__ws_key_valid(const char *key, size_t len) {
  if (len != 24 || key[22] != '=' || key[23] != '=')
    return false;
  for (size_t i = 0; i < 22; i++)
    if (!b64_char((unsigned char)key[i]))
      return false;
  static const char last[] = "AQgw"; /* the values whose low four bits are 0 */
  return strchr(last, key[21]) != NULL;
}

static bool tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

int keel__ws_next_token(const char **pp, const char *end, const char **tok, size_t *len) {
  const char *p = *pp;
  for (;;) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
      p++;
    if (p == end) {
      *pp = p;
      return 0;
    }
    const char *s = p;
    while (p < end && tchar((unsigned char)*p))
      p++;
    if (p == s)
      return -1;
    *tok = s;
    *len = (size_t)(p - s);
    while (p < end && (*p == ' ' || *p == '\t'))
      p++;
    if (p < end && *p != ',')
      return -1;
    *pp = p;
    return 1;
  }
}

bool keel__ws_list_has(const char *value, const char *token) {
  if (!value)
    return false;
  const char *p = value, *end = value + strlen(value), *tok;
  size_t n, tl = strlen(token);
  int rc;
  while ((rc = keel__ws_next_token(&p, end, &tok, &n)) == 1)
    if (n == tl && strncasecmp(tok, token, n) == 0)
      return true;
  return false;
}
