#!/usr/bin/env bash
# Builds the tokenizer fuzz target with clang's libFuzzer (+ AddressSanitizer, UBSan) and runs it.
#   bash dev/fuzz/run_fuzz.sh [RUNS]        # default 1000000 inputs
# Needs clang and libclang-rt-14-dev (scripts/install_deps.sh --dev installs them). Seeds come from
# the parity corpus; new interesting inputs go to build/fuzz/corpus. A failure prints the input
# in hex and leaves a crash-* file.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-1000000}"
mkdir -p build/fuzz/corpus build/fuzz/seeds
# seeds: the first documents of the parity corpus, cut to 512 bytes
python3 - <<'PY'
import struct
data = open("test/fixtures/tokenizer/corpus.bin", "rb").read()
n, pos = struct.unpack_from("<I", data, 0)[0], 4
for i in range(min(n, 200)):
    ln = struct.unpack_from("<I", data, pos)[0]
    open(f"build/fuzz/seeds/doc{i:03d}", "wb").write(data[pos + 4:pos + 4 + min(ln, 512)])
    pos += 4 + ln
PY
srcs=$(ls tokenizer/*.cpp | grep -v _main.cpp)
# trace-cmp instrumentation would make every hash-table probe ~10x slower; plain edge coverage
# with ASan + UBSan keeps 1M runs practical.
clang++ -std=c++20 -O2 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -fno-sanitize-coverage=trace-cmp \
  -Wno-unknown-pragmas -I. dev/fuzz/fuzz_tokenizer.cpp $srcs common/file_io.cpp -lpcre2-8 \
  -o build/fuzz/fuzz_tokenizer
./build/fuzz/fuzz_tokenizer -runs="$runs" -max_len=1024 -timeout=10 -rss_limit_mb=4096 \
  -artifact_prefix=build/fuzz/ build/fuzz/corpus build/fuzz/seeds
