/* Metrics registry: counters, gauges and histograms with pre-rendered labels, exposed in the
 * Prometheus text format.  Single-threaded (the event loop owns it); updates are plain stores. */
#ifndef DS_CORE_METRICS_H
#define DS_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct ds_metrics;

enum ds_metric_type { DS_METRIC_COUNTER, DS_METRIC_GAUGE, DS_METRIC_HISTOGRAM };

#define DS_METRIC_MAX_BUCKETS 16

struct ds_metric {
    enum ds_metric_type type;
    const char *name;   /* borrowed: a string literal */
    const char *help;   /* borrowed: a string literal */
    char labels[160];   /* pre-rendered, e.g. route="/health",code="200"; "" for none */
    double value;       /* counter or gauge */
    double (*read)(void *arg); /* gauge read at render time, when set */
    void *read_arg;
    /* histogram */
    const double *bounds; /* borrowed, ascending, nbounds entries */
    int nbounds;
    uint64_t buckets[DS_METRIC_MAX_BUCKETS + 1];
    double sum;
    uint64_t count;
    struct ds_metric *next;
};

/* Create / free a registry.  Every metric it returns is owned by the registry. */
struct ds_metrics *ds_metrics_new(void);
void ds_metrics_free(struct ds_metrics *m);

/* Find the series (name, labels) or create it; NULL only when out of memory.  `name` and `help`
 * must outlive the registry (string literals).  `labels` is copied (at most 159 bytes). */
struct ds_metric *ds_metrics_counter(struct ds_metrics *m, const char *name, const char *help,
                                     const char *labels);
struct ds_metric *ds_metrics_gauge(struct ds_metrics *m, const char *name, const char *help,
                                   const char *labels);
struct ds_metric *ds_metrics_histogram(struct ds_metrics *m, const char *name, const char *help,
                                       const char *labels, const double *bounds, int nbounds);

static inline void ds_metric_inc(struct ds_metric *x, double by)
{
    if (x)
        x->value += by;
}
static inline void ds_metric_set(struct ds_metric *x, double v)
{
    if (x)
        x->value = v;
}
void ds_metric_observe(struct ds_metric *x, double v);

/* Render every series, grouped by name with one HELP/TYPE each, into out. */
void ds_metrics_render(struct ds_metrics *m, struct ds_buf *out);

/* Latency buckets in seconds shared by request histograms. */
extern const double ds_metrics_latency_bounds[];
extern const int ds_metrics_latency_nbounds;

#endif
