/* 64-bit key hash for the ring: XXH64 (Yann Collet's published xxHash64 algorithm), written here
 * from its specification.
 *
 * Why XXH64: it passes SMHasher with full avalanche, runs at memory speed on 64-bit CPUs, is the
 * hash Envoy's ring_hash uses, and its specification fixes every step (little-endian lane reads,
 * the five primes, the final avalanche), so the same bytes give the same value on every process
 * and machine whatever its endianness.  Keys here are not attacker-chosen for collision flooding
 * (a skewed queue name only skews its own shard), so a keyed hash such as SipHash would cost speed
 * for nothing.  t/unit/ring/test_ring.c pins golden values: a change of the function is caught. */
#ifndef DS_RING_HASH_H
#define DS_RING_HASH_H

#include <stddef.h>
#include <stdint.h>

/* XXH64 of `len` bytes at `data` (may be NULL when len == 0) with `seed`. */
uint64_t ds_hash64(const void *data, size_t len, uint64_t seed);

#endif
