#include "common/checksum.h"

// xxHash is compiled into this file from its header, so that the binaries need no libxxhash.so at
// run time (e.g. when copied to a GPU machine). GCC 12 reports uninitialized variables inside its
// own avx512fintrin.h as inlined by xxHash under -march=native: a false positive there.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define XXH_INLINE_ALL
#include <xxhash.h>

uint64_t xxh3_64(const void* data, size_t n) { return XXH3_64bits(data, n); }
