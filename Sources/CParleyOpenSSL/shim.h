// OpenSSL 3 for DTLS. Macros that do not import into Swift get a static inline wrapper here.
#pragma once
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#include <openssl/x509.h>
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/srtp.h>
#include <openssl/opensslv.h>

static inline const char *parley_openssl_version(void) { return OpenSSL_version(OPENSSL_VERSION); }

/// A fresh ECDSA P-256 key (EVP_EC_gen is a variadic macro).
static inline EVP_PKEY *parley_ec_p256_key(void) { return EVP_EC_gen("P-256"); }

static inline int parley_ssl_ctx_set_dtls12_only(SSL_CTX *ctx) {
    return SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION) && SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION);
}

/// Accepts any certificate during the handshake: the peer is checked against its SDP fingerprint afterwards.
static inline int parley_accept_any_certificate(int preverify_ok, X509_STORE_CTX *ctx) { (void)preverify_ok; (void)ctx; return 1; }

static inline void parley_ssl_ctx_verify_peer_by_fingerprint(SSL_CTX *ctx) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, parley_accept_any_certificate);
}

static inline void parley_bio_set_mem_eof_return(BIO *bio, int value) { BIO_set_mem_eof_return(bio, value); }

/// The path MTU is ours to set: OpenSSL must not query the (memory) BIO for it.
static inline void parley_ssl_set_mtu(SSL *ssl, long mtu) {
    SSL_set_options(ssl, SSL_OP_NO_QUERY_MTU);
    SSL_set_mtu(ssl, mtu);
}

/// Milliseconds until the DTLS retransmission timer fires, or -1 when none is running.
static inline long parley_dtls_timeout_ms(SSL *ssl) {
    struct timeval tv;
    if (!DTLSv1_get_timeout(ssl, &tv)) return -1;
    return (long)tv.tv_sec * 1000 + (long)(tv.tv_usec / 1000);
}

static inline int parley_dtls_handle_timeout(SSL *ssl) { return (int)DTLSv1_handle_timeout(ssl); }
