// OpenSSL 3 for DTLS. Macros that do not import into Swift get a static inline wrapper here.
#pragma once
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#include <openssl/x509.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>

static inline const char *parley_openssl_version(void) { return OpenSSL_version(OPENSSL_VERSION); }
