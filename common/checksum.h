// Checksums of file contents: XXH3-64 (seed 0) from xxHash (Debian libxxhash-dev), a maintained
// and tested hash running at memory bandwidth. Used by the token shards (dataloader/shard.h).
// common/hash.h is not for checksums (see there).
#pragma once
#include <cstddef>
#include <cstdint>

uint64_t xxh3_64(const void* data, size_t n);
