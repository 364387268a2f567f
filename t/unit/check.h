/* Minimal test harness for dsyncd's C tests: CHECK records a failure and goes on, REQUIRE stops
 * the current test.  A test is `static void name(void)`; main() calls RUN(name) for each and
 * returns check_summary().  Tests read like sentences: RUN(leader_is_elected_within_bound). */
#ifndef DS_T_CHECK_H
#define DS_T_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failed_tests;
static int check_run_tests;
static int check_current_failed;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            check_current_failed = 1;                                            \
        }                                                                        \
    } while (0)

#define CHECKF(cond, ...)                                                        \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
            check_current_failed = 1;                                            \
        }                                                                        \
    } while (0)

#define REQUIRE(cond)                                                            \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
            check_current_failed = 1;                                            \
            return;                                                              \
        }                                                                        \
    } while (0)

#define RUN(fn)                                                                  \
    do {                                                                         \
        check_current_failed = 0;                                                \
        fn();                                                                    \
        check_run_tests++;                                                       \
        if (check_current_failed) {                                              \
            check_failed_tests++;                                                \
            fprintf(stderr, "not ok - %s\n", #fn);                               \
        } else {                                                                 \
            printf("ok - %s\n", #fn);                                            \
        }                                                                        \
    } while (0)

static inline int check_summary(void)
{
    printf("%d tests, %d failed\n", check_run_tests, check_failed_tests);
    return check_failed_tests ? 1 : 0;
}

/* Number of random seeds a simulation test runs: $DS_SEEDS, or `dflt`. */
static inline unsigned long check_seeds(unsigned long dflt)
{
    const char *s = getenv("DS_SEEDS");
    return s && *s ? strtoul(s, NULL, 10) : dflt;
}

/* First seed of a run: $DS_SEED_BASE (a soak moves it forward), or 0. */
static inline unsigned long check_seed_base(void)
{
    const char *s = getenv("DS_SEED_BASE");
    return s && *s ? strtoul(s, NULL, 10) : 0;
}

#endif
