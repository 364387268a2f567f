/* Deterministic pseudo-random numbers (xoshiro256** seeded by splitmix64) for pure cores and
 * simulations: the state is a value the caller owns, so a seed replays a run exactly. */
#ifndef DS_CORE_PRNG_H
#define DS_CORE_PRNG_H

#include <stdint.h>

struct ds_prng {
    uint64_t s[4];
};

static inline uint64_t ds_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void ds_prng_seed(struct ds_prng *p, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        p->s[i] = ds_splitmix64(&seed);
}

static inline uint64_t ds_prng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t ds_prng_next(struct ds_prng *p)
{
    uint64_t *s = p->s;
    uint64_t result = ds_prng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ds_prng_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, n), n > 0 (modulo; the bias is below n / 2^64, negligible for our ranges). */
static inline uint64_t ds_prng_below(struct ds_prng *p, uint64_t n)
{
    return ds_prng_next(p) % n;
}

#endif
