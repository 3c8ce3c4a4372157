/* TLS failures as a negative errno plus a readable reason: OpenSSL's
 * verification result, the alert the peer sent, or OpenSSL's own reason. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#include "tls-internal.h"

void keel__tls_set_reason(keel_tls_t *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->reason, sizeof t->reason, fmt, ap);
  va_end(ap);
}

int keel__tls_ctx_error(char *reason, size_t len, int err, const char *what) {
  if (reason && len) {
    unsigned long e = ERR_peek_last_error();
    const char *why = e ? ERR_reason_error_string(e) : NULL;
    if (err != -EPROTO && err != -EINVAL)
      snprintf(reason, len, "%s: %s", what, strerror(-err));
    else if (why)
      snprintf(reason, len, "%s (%s)", what, why);
    else
      snprintf(reason, len, "%s", what);
  }
  ERR_clear_error();
  return err;
}

/* An alert's name: OpenSSL 3.0 names the TLS 1.3 ones "unknown". */
static const char *alert_name(int desc) {
  switch (desc) {
  case 109:
    return "missing extension";
  case 115:
    return "unknown PSK identity";
  case 116:
    return "certificate required";
  case 120:
    return "no application protocol";
  default:
    return SSL_alert_desc_string_long(desc);
  }
}

/* The errno for an alert, received or sent. */
static int alert_errno(int desc) {
  switch (desc) {
  case SSL_AD_BAD_CERTIFICATE:
  case SSL_AD_UNSUPPORTED_CERTIFICATE:
  case SSL_AD_CERTIFICATE_REVOKED:
  case SSL_AD_CERTIFICATE_EXPIRED:
  case SSL_AD_CERTIFICATE_UNKNOWN:
  case SSL_AD_UNKNOWN_CA:
  case SSL_AD_CERTIFICATE_REQUIRED:
  case SSL_AD_ACCESS_DENIED:
    return -EKEYREJECTED;
  case SSL_AD_PROTOCOL_VERSION:
    return -EPROTONOSUPPORT;
  case SSL_AD_NO_APPLICATION_PROTOCOL:
    return -ENOPROTOOPT;
  default:
    return -EPROTO;
  }
}

/* The peer's certificate did not verify (our side said so). */
static int verify_error(keel_tls_t *t, long vr) {
  keel__tls_set_reason(t, "%s", X509_verify_cert_error_string(vr));
  if (vr == X509_V_ERR_CERT_HAS_EXPIRED || vr == X509_V_ERR_CERT_NOT_YET_VALID)
    return -EKEYEXPIRED;
  return -EKEYREJECTED;
}

/* One of OpenSSL's own reasons. */
static int reason_error(keel_tls_t *t, unsigned long e) {
  int r = ERR_GET_REASON(e);
  if (ERR_GET_LIB(e) == ERR_LIB_SSL && r >= SSL_AD_REASON_OFFSET &&
      r < SSL_AD_REASON_OFFSET + 256) {
    int desc = r - SSL_AD_REASON_OFFSET;
    keel__tls_set_reason(t, "alert received: %s", alert_name(desc));
    return alert_errno(desc);
  }
  const char *why = ERR_reason_error_string(e);
  keel__tls_set_reason(t, "%s", why ? why : "TLS error");
  if (ERR_GET_LIB(e) != ERR_LIB_SSL)
    return -EPROTO;
  switch (r) {
  case SSL_R_UNSUPPORTED_PROTOCOL:
  case SSL_R_NO_PROTOCOLS_AVAILABLE:
    return -EPROTONOSUPPORT;
  case SSL_R_NO_APPLICATION_PROTOCOL:
    return -ENOPROTOOPT;
  case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    return -EKEYREJECTED;
  default:
    return t->alert_sent == SSL_AD_PROTOCOL_VERSION ? -EPROTONOSUPPORT : -EPROTO;
  }
}

int keel__tls_error(keel_tls_t *t, int ssl_err) {
  unsigned long e = ERR_peek_last_error();
  long vr = SSL_get_verify_result(t->ssl);
  int rc;
  if (vr != X509_V_OK && (t->ctx->verify || t->ctx->server) &&
      (!e || ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED))
    rc = verify_error(t, vr);
  else if (e)
    rc = reason_error(t, e);
  else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN)
    rc = -ECONNRESET,
    keel__tls_set_reason(t, "the peer closed the connection during the handshake");
  else
    rc = -EPROTO, keel__tls_set_reason(t, "TLS error %d", ssl_err);
  ERR_clear_error();
  return rc;
}
