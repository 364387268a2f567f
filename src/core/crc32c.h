/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78) in portable software, slicing-by-8. */
#ifndef DS_CORE_CRC32C_H
#define DS_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc` (0 to start) over len bytes of buf and returns the new CRC; chaining is exact:
 * ds_crc32c(ds_crc32c(0, a, n), b, m) equals the CRC of a followed by b. Thread-safe. */
uint32_t ds_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
