// CRC-32C (Castagnoli), the checksum of activation shards: what gsutil, iSCSI, ext4 and Kafka use to catch damaged
// data. The TypeScript reference is src/util/checksum.ts; a test holds the two equal.
#pragma once
#include <cstddef>
#include <cstdint>

namespace sdl {

// The CRC-32C of n bytes continuing from `crc` (the CRC of the bytes before them; 0 to start): standard CRC-32C, so
// crc32c(0, "123456789", 9) = 0xE3069283.
uint32_t crc32c(uint32_t crc, const uint8_t* p, size_t n);

}  // namespace sdl
