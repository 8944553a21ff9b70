"""Reader of the engine's shard format (dataloader/shard.h) for the Python benchmarks.

Header (64 bytes, little-endian): magic "LLMCSHRD", version u32, token bytes u32 (2 or 4),
examples u64, tokens u64, tokenizer hash u64, vocab u32, template bytes u32, checksums. Then,
each section padded to 8 bytes: the template text, offsets u64[examples + 1], the tokens, the
loss-mask bitmap (bit i of the payload = token i, least significant bit first). Versions 1 and 2
differ only in the checksum function, which this reader does not verify.
"""
import struct

import numpy as np


def read_shard(path):
    """(offsets int64[n+1], tokens int32[ntok], mask uint8[ntok]) of a shard."""
    b = open(path, "rb").read()
    magic, version, token_bytes, n, ntok, _hash, _vocab, tbytes = struct.unpack_from("<8sIIQQQII", b, 0)
    if magic != b"LLMCSHRD" or version not in (1, 2):
        raise ValueError(f"{path}: not a shard of format version 1 or 2")
    off = 64 + (tbytes + 7) // 8 * 8
    offsets = np.frombuffer(b, np.uint64, n + 1, off).astype(np.int64)
    off += 8 * (n + 1)
    tokens = np.frombuffer(b, np.uint16 if token_bytes == 2 else np.uint32, ntok, off).astype(np.int32)
    off += (ntok * token_bytes + 7) // 8 * 8
    mask = np.unpackbits(np.frombuffer(b, np.uint8, (ntok + 7) // 8, off), bitorder="little")[:ntok]
    return offsets, tokens, mask


def shard_examples(path):
    """The examples of a shard as (tokens, mask) array pairs."""
    offsets, tokens, mask = read_shard(path)
    return [(tokens[b:e], mask[b:e]) for b, e in zip(offsets[:-1], offsets[1:])]
