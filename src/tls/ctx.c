/* TLS contexts: the policy, certificates (several, chosen by SNI), the CA
 * store, ALPN, rotating session ticket keys (server) and the session
 * cache by origin (client). A context is shared by every worker: what
 * changes after it is made (ticket keys, cached sessions) is under its
 * lock, taken once per handshake, never per record. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "tls-internal.h"

#define DEFAULT_CIPHERS                                        \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define DEFAULT_GROUPS "X25519:P-256:P-384"
#define DEFAULT_SESSIONS 256

/* ---- PEM input ------------------------------------------------------------ */

/* A file's contents (NUL-terminated), so that a missing file is -ENOENT
 * and not one of OpenSSL's reasons. */
static int read_file(const char *path, char **out, char *reason, size_t rlen) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return keel__tls_ctx_error(reason, rlen, -errno, path);
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (cap - len < 4096) {
      cap = cap ? cap * 2 : 8192;
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        return -ENOMEM;
      }
      buf = nb;
    }
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0)
      break;
  }
  int err = ferror(f) ? -EIO : 0;
  fclose(f);
  if (err < 0) {
    free(buf);
    return keel__tls_ctx_error(reason, rlen, err, path);
  }
  buf[len] = '\0';
  *out = buf;
  return 0;
}

/* PEM text from memory or from a file: a BIO over it. */
static int pem_bio(const char *pem, const char *file, BIO **out, char **owned, char *reason,
                   size_t rlen) {
  *owned = NULL;
  if (!pem) {
    int rc = read_file(file, owned, reason, rlen);
    if (rc < 0)
      return rc;
    pem = *owned;
  }
  *out = BIO_new_mem_buf(pem, -1);
  if (!*out) {
    free(*owned);
    return -ENOMEM;
  }
  return 0;
}

typedef struct loaded_cert {
  X509 *cert;
  EVP_PKEY *key;
  STACK_OF(X509) * chain;
} loaded_cert_t;

static void loaded_free(loaded_cert_t *lc) {
  X509_free(lc->cert);
  EVP_PKEY_free(lc->key);
  sk_X509_pop_free(lc->chain, X509_free);
  memset(lc, 0, sizeof *lc);
}

static int load_chain(const keel_tls_cert_t *c, loaded_cert_t *lc, char *reason, size_t rlen) {
  BIO *bio;
  char *owned;
  int rc = pem_bio(c->cert_pem, c->cert_file, &bio, &owned, reason, rlen);
  if (rc < 0)
    return rc;
  lc->cert = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
  lc->chain = sk_X509_new_null();
  X509 *x;
  while (lc->chain && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (!sk_X509_push(lc->chain, x)) {
      X509_free(x);
      break;
    }
  }
  ERR_clear_error(); /* the end of the PEM text */
  BIO_free(bio);
  free(owned);
  if (!lc->cert || !lc->chain)
    return keel__tls_ctx_error(reason, rlen, -EPROTO, "certificate: no PEM certificate");
  return 0;
}

static int load_key(const keel_tls_cert_t *c, loaded_cert_t *lc, char *reason, size_t rlen) {
  BIO *bio;
  char *owned;
  int rc = pem_bio(c->key_pem, c->key_file, &bio, &owned, reason, rlen);
  if (rc < 0)
    return rc;
  lc->key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
  BIO_free(bio);
  if (owned) {
    OPENSSL_cleanse(owned, strlen(owned));
    free(owned);
  }
  if (!lc->key)
    return keel__tls_ctx_error(reason, rlen, -EPROTO, "private key: no PEM key");
  if (!X509_check_private_key(lc->cert, lc->key))
    return keel__tls_ctx_error(reason, rlen, -EINVAL,
                               "the private key does not match the certificate");
  return 0;
}

static bool cert_given(const keel_tls_cert_t *c) {
  return c->cert_file || c->cert_pem || c->key_file || c->key_pem;
}

static int load_cert(const keel_tls_cert_t *c, loaded_cert_t *lc, char *reason, size_t rlen) {
  memset(lc, 0, sizeof *lc);
  if (!(c->cert_file || c->cert_pem) || !(c->key_file || c->key_pem))
    return keel__tls_ctx_error(reason, rlen, -EINVAL, "a certificate needs its chain and its key");
  int rc = load_chain(c, lc, reason, rlen);
  if (rc == 0)
    rc = load_key(c, lc, reason, rlen);
  if (rc < 0)
    loaded_free(lc);
  return rc;
}

/* ---- SNI ------------------------------------------------------------------ */

static char *lower_dup(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (!d)
    return NULL;
  for (size_t i = 0; i < n; i++)
    d[i] = (char)tolower((unsigned char)s[i]);
  d[n] = '\0';
  return d;
}

static int add_name(tls_sni_cert_t *sc, const char *s, size_t n) {
  char **nn = realloc(sc->names, (sc->nnames + 1) * sizeof *nn);
  if (!nn)
    return -ENOMEM;
  sc->names = nn;
  if (!(nn[sc->nnames] = lower_dup(s, n)))
    return -ENOMEM;
  sc->nnames++;
  return 0;
}

/* The DNS names a certificate answers for: its subjectAltName DNS entries,
 * or its CN when it has none (as browsers did before RFC 6125). */
static int cert_names(tls_sni_cert_t *sc) {
  GENERAL_NAMES *sans = X509_get_ext_d2i(sc->cert, NID_subject_alt_name, NULL, NULL);
  int rc = 0;
  for (int i = 0; sans && rc == 0 && i < sk_GENERAL_NAME_num(sans); i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
    if (g->type == GEN_DNS)
      rc = add_name(sc, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
                    (size_t)ASN1_STRING_length(g->d.dNSName));
  }
  GENERAL_NAMES_free(sans);
  if (rc == 0 && sc->nnames == 0) {
    char cn[256];
    int n =
        X509_NAME_get_text_by_NID(X509_get_subject_name(sc->cert), NID_commonName, cn, sizeof cn);
    if (n > 0)
      rc = add_name(sc, cn, (size_t)n);
  }
  return rc;
}

static bool name_matches(const char *pattern, const char *host) {
  if (strcasecmp(pattern, host) == 0)
    return true;
  if (pattern[0] != '*' || pattern[1] != '.')
    return false;
  const char *dot = strchr(host, '.');
  return dot && dot != host && strcasecmp(pattern + 1, dot) == 0;
}

static int servername_cb(SSL *ssl, int *alert, void *arg) {
  (void)alert;
  keel_tls_ctx_t *ctx = arg;
  const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!host)
    return SSL_TLSEXT_ERR_OK;
  for (size_t i = 0; i < ctx->nsni; i++) {
    tls_sni_cert_t *sc = &ctx->sni[i];
    for (size_t j = 0; j < sc->nnames; j++) {
      if (name_matches(sc->names[j], host)) {
        if (!SSL_use_cert_and_key(ssl, sc->cert, sc->key, sc->chain, 1))
          return SSL_TLSEXT_ERR_ALERT_FATAL;
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_OK; /* the default certificate */
}

static int load_sni(keel_tls_ctx_t *ctx, const keel_tls_ctx_opts_t *o, char *reason, size_t rlen) {
  if (o->sni_count == 0)
    return 0;
  if (!o->sni_certs)
    return keel__tls_ctx_error(reason, rlen, -EINVAL, "sni_count without sni_certs");
  ctx->sni = calloc(o->sni_count, sizeof *ctx->sni);
  if (!ctx->sni)
    return -ENOMEM;
  for (size_t i = 0; i < o->sni_count; i++) {
    loaded_cert_t lc;
    int rc = load_cert(&o->sni_certs[i], &lc, reason, rlen);
    if (rc < 0)
      return rc;
    tls_sni_cert_t *sc = &ctx->sni[ctx->nsni++];
    sc->cert = lc.cert;
    sc->key = lc.key;
    sc->chain = lc.chain;
    if ((rc = cert_names(sc)) < 0)
      return rc;
  }
  SSL_CTX_set_tlsext_servername_callback(ctx->ssl, servername_cb);
  SSL_CTX_set_tlsext_servername_arg(ctx->ssl, ctx);
  return 0;
}

/* ---- ALPN ----------------------------------------------------------------- */

/* The wire form of a NULL-terminated list: each name with its length. */
int keel__tls_alpn_wire(const char *const *list, unsigned char **out, size_t *len) {
  size_t total = 0;
  for (size_t i = 0; list[i]; i++) {
    size_t n = strlen(list[i]);
    if (n == 0 || n > 255)
      return -EINVAL;
    total += n + 1;
  }
  if (total == 0 || total > 65535)
    return -EINVAL;
  unsigned char *w = malloc(total);
  if (!w)
    return -ENOMEM;
  size_t at = 0;
  for (size_t i = 0; list[i]; i++) {
    size_t n = strlen(list[i]);
    w[at++] = (unsigned char)n;
    memcpy(w + at, list[i], n);
    at += n;
  }
  *out = w;
  *len = total;
  return 0;
}

/* The server's first protocol that the client offers; none in common is
 * fatal (RFC 7301: no_application_protocol). */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned inlen, void *arg) {
  (void)ssl;
  keel_tls_ctx_t *ctx = arg;
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, ctx->alpn, (unsigned)ctx->alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static int setup_alpn(keel_tls_ctx_t *ctx, const keel_tls_ctx_opts_t *o, char *reason,
                      size_t rlen) {
  if (!o->alpn || !o->alpn[0])
    return 0;
  if (keel__tls_alpn_wire(o->alpn, &ctx->alpn, &ctx->alpn_len) < 0)
    return keel__tls_ctx_error(reason, rlen, -EINVAL, "alpn: names of 1 to 255 bytes");
  if (ctx->server)
    SSL_CTX_set_alpn_select_cb(ctx->ssl, alpn_select_cb, ctx);
  else if (SSL_CTX_set_alpn_protos(ctx->ssl, ctx->alpn, (unsigned)ctx->alpn_len) != 0)
    return -ENOMEM;
  return 0;
}

/* ---- Session tickets (server) ------------------------------------------- */

/* Under ctx->lock: a new key every quarter of the lifetime, the old ones
 * kept until the tickets they encrypted have expired. */
static int rotate_keys(keel_tls_ctx_t *ctx, int64_t now) {
  int64_t quarter = ctx->ticket_lifetime_ns / 4;
  while (ctx->nkeys > 0 &&
         now - ctx->keys[ctx->nkeys - 1].created_ns > ctx->ticket_lifetime_ns + quarter)
    ctx->nkeys--;
  if (ctx->nkeys > 0 && now - ctx->keys[0].created_ns < quarter)
    return 0;
  if (ctx->nkeys == TLS_TICKET_KEYS)
    ctx->nkeys--;
  memmove(&ctx->keys[1], &ctx->keys[0], (size_t)ctx->nkeys * sizeof ctx->keys[0]);
  tls_ticket_key_t *k = &ctx->keys[0];
  if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_bytes(k->aes, sizeof k->aes) != 1 ||
      RAND_bytes(k->hmac, sizeof k->hmac) != 1) {
    memmove(&ctx->keys[0], &ctx->keys[1], (size_t)ctx->nkeys * sizeof ctx->keys[0]);
    return -1;
  }
  k->created_ns = now;
  ctx->nkeys++;
  return 0;
}

static int ticket_key_init(const tls_ticket_key_t *k, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                           EVP_MAC_CTX *hctx, int enc) {
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof k->hmac),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
      OSSL_PARAM_construct_end(),
  };
  if (!EVP_MAC_CTX_set_params(hctx, params))
    return -1;
  if (enc)
    return EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) ? 0 : -1;
  return EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) ? 0 : -1;
}

/* OpenSSL's ticket callback: 1 = done, 2 = decrypted but please issue a
 * fresh ticket (the key is no longer the newest, or TLS 1.3), 0 = unknown
 * key (a full handshake), -1 = error. */
static int ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc) {
  keel_tls_ctx_t *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  tls_ticket_key_t k;
  int found = -1;
  int64_t now = keel_now_ns();
  pthread_mutex_lock(&ctx->lock);
  if (rotate_keys(ctx, now) == 0) {
    for (int i = 0; i < ctx->nkeys; i++) {
      if (enc || memcmp(name, ctx->keys[i].name, sizeof k.name) == 0) {
        k = ctx->keys[i];
        found = i;
        break;
      }
    }
  }
  pthread_mutex_unlock(&ctx->lock);
  if (found < 0)
    return enc ? -1 : 0;
  /* 2: a fresh ticket goes out. Always on a TLS 1.3 resumption: clients
   * use a ticket once (RFC 8446, C.4), so each resumption must leave
   * them another. */
  int ret = enc || (found == 0 && SSL_version(ssl) < TLS1_3_VERSION) ? 1 : 2;
  if (enc) {
    memcpy(name, k.name, sizeof k.name);
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
      ret = -1;
  }
  if (ret > 0 && ticket_key_init(&k, iv, cctx, hctx, enc) < 0)
    ret = -1;
  OPENSSL_cleanse(&k, sizeof k);
  return ret;
}

/* ---- Session cache (client) --------------------------------------------- */

static int new_session_cb(SSL *ssl, SSL_SESSION *sess) {
  keel_tls_t *t = SSL_get_app_data(ssl);
  keel_tls_ctx_t *ctx = t->ctx;
  if (!t->session_key || !SSL_SESSION_is_resumable(sess))
    return 0;
  pthread_mutex_lock(&ctx->lock);
  tls_session_t *slot = NULL, *oldest = NULL;
  for (size_t i = 0; i < ctx->nsessions; i++) {
    tls_session_t *e = &ctx->sessions[i];
    if (strcmp(e->key, t->session_key) == 0) {
      slot = e;
      break;
    }
    if (!oldest || e->used < oldest->used)
      oldest = e;
  }
  if (!slot && ctx->nsessions < ctx->max_sessions) {
    char *key = strdup(t->session_key);
    if (key) {
      slot = &ctx->sessions[ctx->nsessions++];
      slot->key = key;
      slot->sess = NULL;
    }
  }
  if (!slot && oldest) {
    char *key = strdup(t->session_key);
    if (key) {
      free(oldest->key);
      oldest->key = key;
      slot = oldest;
    }
  }
  int kept = 0;
  if (slot) {
    SSL_SESSION_free(slot->sess);
    slot->sess = sess;
    slot->used = ++ctx->session_clock;
    kept = 1;
  }
  pthread_mutex_unlock(&ctx->lock);
  return kept; /* 1: the cache holds the reference OpenSSL gave */
}

SSL_SESSION *keel__tls_session_get(keel_tls_ctx_t *ctx, const char *key) {
  SSL_SESSION *sess = NULL;
  pthread_mutex_lock(&ctx->lock);
  for (size_t i = 0; i < ctx->nsessions; i++) {
    tls_session_t *e = &ctx->sessions[i];
    if (e->sess && strcmp(e->key, key) == 0) {
      if (SSL_SESSION_is_resumable(e->sess) && SSL_SESSION_up_ref(e->sess)) {
        sess = e->sess;
        e->used = ++ctx->session_clock;
      }
      break;
    }
  }
  pthread_mutex_unlock(&ctx->lock);
  return sess;
}

/* ---- The context ---------------------------------------------------------- */

static void info_cb(const SSL *ssl, int where, int ret) {
  if (!(where & SSL_CB_ALERT))
    return;
  keel_tls_t *t = SSL_get_app_data(ssl);
  if (!t)
    return;
  int desc = ret & 0xff;
  if (where & SSL_CB_READ) {
    t->alert_received = desc;
    if (desc == SSL_AD_CLOSE_NOTIFY)
      t->peer_closed = true;
  } else {
    t->alert_sent = desc;
  }
}

static int setup_policy(keel_tls_ctx_t *ctx, const keel_tls_ctx_opts_t *o, char *reason,
                        size_t rlen) {
  SSL_CTX *s = ctx->ssl;
  int minv = o->min_version ? o->min_version : KEEL_TLS_1_2;
  int maxv = o->max_version ? o->max_version : KEEL_TLS_1_3;
  if (minv < KEEL_TLS_1_2 || maxv > KEEL_TLS_1_3 || minv > maxv)
    return keel__tls_ctx_error(reason, rlen, -EINVAL, "versions: TLS 1.2 and 1.3 only");
  if (!SSL_CTX_set_min_proto_version(s, minv) || !SSL_CTX_set_max_proto_version(s, maxv))
    return keel__tls_ctx_error(reason, rlen, -EINVAL, "versions");
  SSL_CTX_set_options(s, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (!SSL_CTX_set_cipher_list(s, o->ciphers ? o->ciphers : DEFAULT_CIPHERS))
    return keel__tls_ctx_error(reason, rlen, -EINVAL, "ciphers: no cipher of the list is known");
  if (o->ciphersuites && !SSL_CTX_set_ciphersuites(s, o->ciphersuites))
    return keel__tls_ctx_error(reason, rlen, -EINVAL, "ciphersuites: not known");
  if (!SSL_CTX_set1_groups_list(s, o->groups ? o->groups : DEFAULT_GROUPS))
    return keel__tls_ctx_error(reason, rlen, -EINVAL, "groups: not known");
  SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(s, 1);
  SSL_CTX_set_info_callback(s, info_cb);
  return 0;
}

static int setup_trust(keel_tls_ctx_t *ctx, const keel_tls_ctx_opts_t *o, char *reason,
                       size_t rlen) {
  SSL_CTX *s = ctx->ssl;
  bool given = o->ca_file || o->ca_dir || o->ca_pem;
  if (given && (o->ca_file || o->ca_dir) &&
      !SSL_CTX_load_verify_locations(s, o->ca_file, o->ca_dir)) {
    const char *what = o->ca_file ? o->ca_file : o->ca_dir;
    struct stat st;
    return keel__tls_ctx_error(reason, rlen, stat(what, &st) < 0 ? -errno : -EPROTO, what);
  }
  if (o->ca_pem) {
    BIO *bio = BIO_new_mem_buf(o->ca_pem, -1);
    X509_STORE *store = SSL_CTX_get_cert_store(s);
    int added = 0;
    X509 *x;
    while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
      added += X509_STORE_add_cert(store, x) == 1;
      X509_free(x);
    }
    ERR_clear_error();
    BIO_free(bio);
    if (added == 0)
      return keel__tls_ctx_error(reason, rlen, -EPROTO, "ca_pem: no PEM certificate");
  }
  if (ctx->server) {
    if (o->client_auth == KEEL_TLS_CLIENT_CERT_NONE)
      return 0;
    if (!given)
      return keel__tls_ctx_error(reason, rlen, -EINVAL,
                                 "client_auth needs ca_file, ca_dir or ca_pem");
    int mode = SSL_VERIFY_PEER;
    if (o->client_auth == KEEL_TLS_CLIENT_CERT_REQUIRE)
      mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(s, mode, NULL);
    if (o->ca_file) {
      STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
      if (names)
        SSL_CTX_set_client_CA_list(s, names);
      ERR_clear_error();
    }
    return 0;
  }
  if (o->insecure_no_verify)
    return 0;
  if (!given && !SSL_CTX_set_default_verify_paths(s))
    return keel__tls_ctx_error(reason, rlen, -EPROTO, "OpenSSL's default CA paths");
  SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
  ctx->verify = true;
  return 0;
}

/* The context's own certificate: a server's default, a client's. */
static int use_cert(keel_tls_ctx_t *ctx, const keel_tls_cert_t *c, char *reason, size_t rlen) {
  loaded_cert_t lc;
  int rc = load_cert(c, &lc, reason, rlen);
  if (rc < 0)
    return rc;
  int ok = SSL_CTX_use_cert_and_key(ctx->ssl, lc.cert, lc.key, lc.chain, 1);
  loaded_free(&lc);
  if (!ok)
    return keel__tls_ctx_error(reason, rlen, -EINVAL, "certificate: refused by OpenSSL");
  return 0;
}

static int setup_server(keel_tls_ctx_t *ctx, const keel_tls_ctx_opts_t *o, char *reason,
                        size_t rlen) {
  int rc = use_cert(ctx, &o->cert, reason, rlen);
  if (rc < 0)
    return rc;
  if ((rc = load_sni(ctx, o, reason, rlen)) < 0)
    return rc;
  static const unsigned char sid_ctx[] = "keel";
  SSL_CTX_set_session_id_context(ctx->ssl, sid_ctx, sizeof sid_ctx - 1);
  /* Stateless resumption only: tickets, no server-side session cache. */
  SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_OFF);
  int64_t life =
      o->ticket_lifetime_s > 0 ? o->ticket_lifetime_s : KEEL_TLS_DEFAULT_TICKET_LIFETIME_S;
  ctx->ticket_lifetime_ns = life * KEEL_NS_PER_SEC;
  if (o->no_tickets) {
    SSL_CTX_set_options(ctx->ssl, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx->ssl, 0);
  } else {
    SSL_CTX_set_timeout(ctx->ssl, (long)life);
    SSL_CTX_set_num_tickets(ctx->ssl, 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx->ssl, ticket_cb);
  }
  int64_t hs = o->handshake_timeout_ms;
  ctx->handshake_timeout_ns =
      hs < 0 ? 0 : (hs ? hs : KEEL_TLS_DEFAULT_HANDSHAKE_TIMEOUT_MS) * KEEL_NS_PER_MS;
  return 0;
}

static int setup_client(keel_tls_ctx_t *ctx, const keel_tls_ctx_opts_t *o, char *reason,
                        size_t rlen) {
  if (cert_given(&o->cert)) {
    int rc = use_cert(ctx, &o->cert, reason, rlen);
    if (rc < 0)
      return rc;
  }
  if (o->handshake_timeout_ms > 0)
    ctx->handshake_timeout_ns = o->handshake_timeout_ms * KEEL_NS_PER_MS;
  if (!o->no_session_cache) {
    ctx->max_sessions = o->session_cache_size ? o->session_cache_size : DEFAULT_SESSIONS;
    ctx->sessions = calloc(ctx->max_sessions, sizeof *ctx->sessions);
    if (!ctx->sessions)
      return -ENOMEM;
    SSL_CTX_set_session_cache_mode(ctx->ssl,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx->ssl, new_session_cb);
  } else {
    SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_OFF);
  }
  return 0;
}

static void ctx_free(keel_tls_ctx_t *ctx) {
  SSL_CTX_free(ctx->ssl);
  BIO_meth_free(ctx->bio_method);
  for (size_t i = 0; i < ctx->nsni; i++) {
    tls_sni_cert_t *sc = &ctx->sni[i];
    X509_free(sc->cert);
    EVP_PKEY_free(sc->key);
    sk_X509_pop_free(sc->chain, X509_free);
    for (size_t j = 0; j < sc->nnames; j++)
      free(sc->names[j]);
    free(sc->names);
  }
  free(ctx->sni);
  free(ctx->alpn);
  for (size_t i = 0; i < ctx->nsessions; i++) {
    free(ctx->sessions[i].key);
    SSL_SESSION_free(ctx->sessions[i].sess);
  }
  free(ctx->sessions);
  OPENSSL_cleanse(ctx->keys, sizeof ctx->keys);
  pthread_mutex_destroy(&ctx->lock);
  free(ctx);
}

int keel_tls_ctx_open(const keel_tls_ctx_opts_t *opts, keel_tls_ctx_t **out, char *reason,
                      size_t reason_len) {
  keel_tls_ctx_opts_t zero = {0};
  const keel_tls_ctx_opts_t *o = opts ? opts : &zero;
  if (reason && reason_len)
    reason[0] = '\0';
  if (!out)
    return -EINVAL;
  keel_tls_ctx_t *ctx = calloc(1, sizeof *ctx);
  if (!ctx)
    return -ENOMEM;
  atomic_init(&ctx->refs, 1);
  ctx->server = o->server;
  pthread_mutex_init(&ctx->lock, NULL);
  int rc = -ENOMEM;
  ctx->ssl = SSL_CTX_new(o->server ? TLS_server_method() : TLS_client_method());
  ctx->bio_method = keel__tls_bio_method();
  if (!ctx->ssl || !ctx->bio_method)
    goto fail;
  SSL_CTX_set_app_data(ctx->ssl, ctx);
  if ((rc = setup_policy(ctx, o, reason, reason_len)) < 0 ||
      (rc = setup_trust(ctx, o, reason, reason_len)) < 0 ||
      (rc = setup_alpn(ctx, o, reason, reason_len)) < 0)
    goto fail;
  rc = o->server ? setup_server(ctx, o, reason, reason_len)
                 : setup_client(ctx, o, reason, reason_len);
  if (rc < 0)
    goto fail;
  ERR_clear_error();
  *out = ctx;
  return 0;
fail:
  ERR_clear_error();
  ctx_free(ctx);
  return rc;
}

void keel__tls_ctx_hold(keel_tls_ctx_t *ctx) { atomic_fetch_add(&ctx->refs, 1); }

void keel_tls_ctx_close(keel_tls_ctx_t *ctx) {
  if (ctx && atomic_fetch_sub(&ctx->refs, 1) == 1)
    ctx_free(ctx);
}
