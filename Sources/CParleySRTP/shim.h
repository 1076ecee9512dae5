// libsrtp2 for SRTP/SRTCP. Macros that do not import into Swift get a static inline wrapper here.
#pragma once
#include <srtp2/srtp.h>
