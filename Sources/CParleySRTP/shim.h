// libsrtp2, the reference SRTP implementation the tests check Parley's own against. Macros that do not import into Swift get a static inline wrapper here.
#pragma once
#include <srtp2/srtp.h>

static inline void parley_srtp_policy_aes_cm_128_hmac_sha1_80(srtp_crypto_policy_t *p) {
    srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(p);
}
