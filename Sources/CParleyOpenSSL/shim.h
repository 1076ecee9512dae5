// OpenSSL 3 for DTLS and SRTP's ciphers. Macros that do not import into Swift get a static inline
// wrapper here, as do the few calls SRTP makes per packet (so a packet costs one Swift-to-C call).
#pragma once
// HMAC_CTX is deprecated in OpenSSL 3 but keeps the key schedule between packets; EVP_MAC does not
// let a context be reset without re-keying, which costs more than the MAC itself.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <string.h>
#include <openssl/hmac.h>
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

// MARK: SRTP per-packet crypto (RFC 3711, RFC 7714). Contexts are keyed once per session.

/// An AES-128 context keyed with `key`, for GCM (encrypting or decrypting) or counter mode.
static inline EVP_CIPHER_CTX *parley_aes128_context(const unsigned char *key, int gcm, int decrypt) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return NULL;
    const EVP_CIPHER *cipher = gcm ? EVP_aes_128_gcm() : EVP_aes_128_ctr();
    int ok = decrypt ? EVP_DecryptInit_ex(ctx, cipher, NULL, key, NULL) : EVP_EncryptInit_ex(ctx, cipher, NULL, key, NULL);
    if (ok != 1) { EVP_CIPHER_CTX_free(ctx); return NULL; }
    return ctx;
}

/// XORs `data` with the AES counter-mode keystream starting at the 16-byte block `iv`.
static inline int parley_aes_ctr_xor(EVP_CIPHER_CTX *ctx, const unsigned char *iv, unsigned char *data, int length) {
    int written = 0;
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1) return 0;
    return length == 0 || EVP_EncryptUpdate(ctx, data, &written, data, length) == 1;
}

/// AES-GCM in place: authenticates `aad` then `aad2` (either may be empty), encrypts `data` and
/// writes the 16-byte tag to `tag`.
static inline int parley_aes_gcm_seal(EVP_CIPHER_CTX *ctx, const unsigned char *iv, const unsigned char *aad, int aadLength,
                                      const unsigned char *aad2, int aad2Length, unsigned char *data, int length, unsigned char *tag) {
    int written = 0;
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1) return 0;
    if (aadLength > 0 && EVP_EncryptUpdate(ctx, NULL, &written, aad, aadLength) != 1) return 0;
    if (aad2Length > 0 && EVP_EncryptUpdate(ctx, NULL, &written, aad2, aad2Length) != 1) return 0;
    if (length > 0 && EVP_EncryptUpdate(ctx, data, &written, data, length) != 1) return 0;
    if (EVP_EncryptFinal_ex(ctx, data + length, &written) != 1) return 0;
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
}

/// AES-GCM in place: decrypts `data` and returns 1 only if `tag` authenticates it and the AAD.
static inline int parley_aes_gcm_open(EVP_CIPHER_CTX *ctx, const unsigned char *iv, const unsigned char *aad, int aadLength,
                                      const unsigned char *aad2, int aad2Length, unsigned char *data, int length, const unsigned char *tag) {
    int written = 0;
    unsigned char expected[16];
    memcpy(expected, tag, 16);
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1) return 0;
    if (aadLength > 0 && EVP_DecryptUpdate(ctx, NULL, &written, aad, aadLength) != 1) return 0;
    if (aad2Length > 0 && EVP_DecryptUpdate(ctx, NULL, &written, aad2, aad2Length) != 1) return 0;
    if (length > 0 && EVP_DecryptUpdate(ctx, data, &written, data, length) != 1) return 0;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, expected) != 1) return 0;
    return EVP_DecryptFinal_ex(ctx, data + length, &written) == 1;
}

static inline HMAC_CTX *parley_hmac_sha1_context(const unsigned char *key, int keyLength) {
    HMAC_CTX *ctx = HMAC_CTX_new();
    if (!ctx) return NULL;
    if (HMAC_Init_ex(ctx, key, keyLength, EVP_sha1(), NULL) != 1) { HMAC_CTX_free(ctx); return NULL; }
    return ctx;
}

static inline void parley_hmac_free(HMAC_CTX *ctx) { HMAC_CTX_free(ctx); }

/// HMAC-SHA1 over `data` then `suffix` (SRTP's ROC; may be empty), truncated to `tagLength` bytes.
static inline int parley_hmac_sha1_tag(HMAC_CTX *ctx, const unsigned char *data, int length,
                                       const unsigned char *suffix, int suffixLength, unsigned char *tag, int tagLength) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digestLength = 0;
    if (HMAC_Init_ex(ctx, NULL, 0, NULL, NULL) != 1) return 0;
    if (HMAC_Update(ctx, data, (size_t)length) != 1) return 0;
    if (suffixLength > 0 && HMAC_Update(ctx, suffix, (size_t)suffixLength) != 1) return 0;
    if (HMAC_Final(ctx, digest, &digestLength) != 1 || (int)digestLength < tagLength) return 0;
    memcpy(tag, digest, (size_t)tagLength);
    return 1;
}
