/* XXH64 written from the xxHash specification: portable, endianness-independent lane reads. */
#include "ring/hash.h"

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* Little-endian reads byte by byte: the same value on any host byte order. */
static uint64_t read64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t read32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t lane_round(uint64_t acc, uint64_t lane)
{
    acc += lane * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static uint64_t merge_round(uint64_t acc, uint64_t v)
{
    acc ^= lane_round(0, v);
    return acc * P1 + P4;
}

/* The 32-byte stripe loop for inputs of 32 bytes or more; advances *pp past the stripes. */
static uint64_t stripes(const uint8_t **pp, const uint8_t *end, uint64_t seed)
{
    const uint8_t *p = *pp;
    uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
    while (end - p >= 32) {
        v1 = lane_round(v1, read64(p));
        v2 = lane_round(v2, read64(p + 8));
        v3 = lane_round(v3, read64(p + 16));
        v4 = lane_round(v4, read64(p + 24));
        p += 32;
    }
    *pp = p;
    uint64_t acc = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
    acc = merge_round(acc, v1);
    acc = merge_round(acc, v2);
    acc = merge_round(acc, v3);
    return merge_round(acc, v4);
}

static uint64_t avalanche(uint64_t h)
{
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    return h ^ (h >> 32);
}

uint64_t ds_hash64(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data;
    const uint8_t *end = p + len;
    uint64_t h = len >= 32 ? stripes(&p, end, seed) : seed + P5;

    h += (uint64_t)len;
    while (end - p >= 8) {
        h ^= lane_round(0, read64(p));
        h = rotl64(h, 27) * P1 + P4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)read32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)*p * P5;
        h = rotl64(h, 11) * P1;
        p++;
    }
    return avalanche(h);
}
