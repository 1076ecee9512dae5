#!/usr/bin/env bash
# Builds the libFuzzer targets for the STUN, RTP/RTCP, SDP and TWCC feedback parsers and the VP8
# descriptor/munger, and runs each for FUZZ_SECONDS (default 60), with AddressSanitizer. Seeds come
# from Fuzz/corpus/<target>.
# Usage: Fuzz/run.sh [stun|rtp|sdp|twcc|vp8 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS=("${@:-stun rtp sdp twcc vp8}")
OUT=.build/fuzz
mkdir -p "$OUT"

# Compiles take the machine's shared Swift build lock, so they queue behind other builds instead
# of fighting them for the cores (where flock exists; the fuzz runs themselves do not take it).
BUILD_LOCK="${PARLEY_BUILD_LOCK:-/tmp/parley-swift-build.lock}"
locked() {
    if command -v flock >/dev/null; then (flock 9 && "$@") 9>"$BUILD_LOCK"; else "$@"; fi
}

# The parsers are compiled from source with the fuzzer's instrumentation; STUN also links the
# objects of a normal build for what it uses: swift-crypto (HMAC, SHA, MD5) and Addresses. Only
# STUN needs that build, so other targets skip it.
CRYPTO_OBJECTS=""
if [[ " ${TARGETS[*]} " == *" stun "* ]]; then
    locked swift build --target STUN >/dev/null
    CRYPTO_OBJECTS=$(find .build/debug/Addresses.build .build/debug/Crypto.build .build/debug/CCryptoBoringSSL.build .build/debug/CCryptoBoringSSLShims.build \
        .build/debug/CryptoBoringWrapper.build .build/debug/CXKCP.build .build/debug/CXKCPShims.build -name '*.o')
fi

build() {
    local name=$1 module=$2 source=$3
    local flags=(-sanitize=fuzzer,address -parse-as-library -O -g -swift-version 6)
    mkdir -p "$OUT/$name.modules"
    case $module in
    STUN)
        swiftc "${flags[@]}" -emit-module -emit-library -static -module-name STUN -I .build/debug/Modules \
            -emit-module-path "$OUT/$name.modules/STUN.swiftmodule" -o "$OUT/libSTUNfuzz.a" Sources/STUN/*.swift
        ;;
    *)
        swiftc "${flags[@]}" -emit-module -emit-library -static -module-name "$module" \
            -emit-module-path "$OUT/$name.modules/$module.swiftmodule" -o "$OUT/lib${module}fuzz.a" Sources/"$module"/*.swift
        ;;
    esac
    # shellcheck disable=SC2086
    swiftc "${flags[@]}" -I "$OUT/$name.modules" -I .build/debug/Modules "Fuzz/${source}FuzzTarget.swift" \
        "$OUT/lib${module}fuzz.a" $([ "$module" = STUN ] && echo $CRYPTO_OBJECTS) -o "$OUT/fuzz-$name"
}

for target in ${TARGETS[*]}; do
    case $target in
    stun) module=STUN ;;
    rtp) module=RTP ;;
    sdp) module=SDP ;;
    twcc) module=Congestion ;;
    vp8) module=RTP ;;
    *) echo "unknown target $target (stun, rtp, sdp, twcc, vp8)"; exit 2 ;;
    esac
    # The entry file is Fuzz/<module>FuzzTarget.swift, except for targets that share a module.
    case $target in
    vp8) source=VP8 ;;
    *) source=$module ;;
    esac
    echo "== building fuzz-$target"
    if ! locked build "$target" "$module" "$source" >"$OUT/build-$target.log" 2>&1; then
        grep -E "error" "$OUT/build-$target.log" | head -20
        exit 1
    fi
    corpus="$OUT/corpus-$target"
    mkdir -p "$corpus"
    [ -d "Fuzz/corpus/$target" ] && cp -n Fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
    echo "== running fuzz-$target for ${SECONDS_EACH}s"
    "$OUT/fuzz-$target" -max_total_time="$SECONDS_EACH" -max_len=4096 -print_final_stats=1 "$corpus" 2>&1 \
        | grep -E "^(#[0-9]+.*(DONE|INITED)|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)" || true
    # libFuzzer exits non-zero and leaves crash-* files on a finding.
    if ls crash-* leak-* oom-* timeout-* >/dev/null 2>&1; then echo "fuzz-$target found a crash"; exit 1; fi
done
