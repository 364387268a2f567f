/* Metrics registry rendered in the Prometheus text exposition format (version 0.0.4). */
#include "core/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ds_metrics {
    struct ds_metric *head;
    struct ds_metric **tail;
};

const double ds_metrics_latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                            0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                            1,      2.5,     5,      10};
const int ds_metrics_latency_nbounds = 16;

struct ds_metrics *ds_metrics_new(void)
{
    struct ds_metrics *m = calloc(1, sizeof *m);
    if (m)
        m->tail = &m->head;
    return m;
}

void ds_metrics_free(struct ds_metrics *m)
{
    if (!m)
        return;
    for (struct ds_metric *x = m->head, *n; x; x = n) {
        n = x->next;
        free(x);
    }
    free(m);
}

static struct ds_metric *get(struct ds_metrics *m, enum ds_metric_type type, const char *name,
                             const char *help, const char *labels)
{
    for (struct ds_metric *x = m->head; x; x = x->next)
        if (x->type == type && strcmp(x->name, name) == 0 && strcmp(x->labels, labels) == 0)
            return x;
    struct ds_metric *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->type = type;
    x->name = name;
    x->help = help;
    snprintf(x->labels, sizeof x->labels, "%s", labels);
    *m->tail = x;
    m->tail = &x->next;
    return x;
}

struct ds_metric *ds_metrics_counter(struct ds_metrics *m, const char *name, const char *help,
                                     const char *labels)
{
    return get(m, DS_METRIC_COUNTER, name, help, labels);
}

struct ds_metric *ds_metrics_gauge(struct ds_metrics *m, const char *name, const char *help,
                                   const char *labels)
{
    return get(m, DS_METRIC_GAUGE, name, help, labels);
}

struct ds_metric *ds_metrics_histogram(struct ds_metrics *m, const char *name, const char *help,
                                       const char *labels, const double *bounds, int nbounds)
{
    struct ds_metric *x = get(m, DS_METRIC_HISTOGRAM, name, help, labels);
    if (x && !x->bounds) {
        x->bounds = bounds;
        x->nbounds = nbounds < DS_METRIC_MAX_BUCKETS ? nbounds : DS_METRIC_MAX_BUCKETS;
    }
    return x;
}

void ds_metric_observe(struct ds_metric *x, double v)
{
    if (!x)
        return;
    int i = 0;
    while (i < x->nbounds && v > x->bounds[i])
        i++;
    x->buckets[i]++;
    x->sum += v;
    x->count++;
}

static void number(struct ds_buf *out, double v)
{
    if (isnan(v))
        ds_buf_printf(out, "NaN");
    else if (isinf(v))
        ds_buf_printf(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(int64_t)v && fabs(v) < 9e15)
        ds_buf_printf(out, "%" PRId64, (int64_t)v);
    else
        ds_buf_printf(out, "%.9g", v);
}

static void render_histogram(const struct ds_metric *x, struct ds_buf *out)
{
    const char *sep = x->labels[0] ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i <= x->nbounds; i++) {
        cum += x->buckets[i];
        ds_buf_printf(out, "%s_bucket{%s%sle=\"", x->name, x->labels, sep);
        if (i < x->nbounds)
            number(out, x->bounds[i]);
        else
            ds_buf_printf(out, "+Inf");
        ds_buf_printf(out, "\"} %" PRIu64 "\n", cum);
    }
    const char *l = x->labels[0] ? "{" : "", *r = x->labels[0] ? "}" : "";
    ds_buf_printf(out, "%s_sum%s%s%s ", x->name, l, x->labels, r);
    number(out, x->sum);
    ds_buf_printf(out, "\n%s_count%s%s%s %" PRIu64 "\n", x->name, l, x->labels, r, x->count);
}

static void render_series(const struct ds_metric *x, struct ds_buf *out)
{
    if (x->type == DS_METRIC_HISTOGRAM) {
        render_histogram(x, out);
        return;
    }
    double v = x->read ? x->read(x->read_arg) : x->value;
    if (x->labels[0])
        ds_buf_printf(out, "%s{%s} ", x->name, x->labels);
    else
        ds_buf_printf(out, "%s ", x->name);
    number(out, v);
    ds_buf_printf(out, "\n");
}

void ds_metrics_render(struct ds_metrics *m, struct ds_buf *out)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    for (struct ds_metric *x = m->head; x; x = x->next) {
        int first = 1;
        for (struct ds_metric *y = m->head; y != x; y = y->next)
            if (strcmp(y->name, x->name) == 0)
                first = 0;
        if (!first)
            continue;
        ds_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", x->name, x->help, x->name,
                      types[x->type]);
        for (struct ds_metric *y = x; y; y = y->next)
            if (strcmp(y->name, x->name) == 0)
                render_series(y, out);
    }
}
