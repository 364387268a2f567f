/* Structured logging (logfmt / JSON lines on stderr) and the buffered audit log. */
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"

static char log_node[64] = "-";
static char log_role[16] = "-";
static int log_level = DS_LOG_INFO;
static int log_format = DS_LOG_LOGFMT;
static FILE *audit;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ds_log_init(const char *node, const char *role, int level, int format)
{
    snprintf(log_node, sizeof log_node, "%s", node);
    snprintf(log_role, sizeof log_role, "%s", role);
    log_level = level;
    log_format = format;
}

int ds_log_enabled(int level)
{
    return level >= log_level;
}

static void timestamp(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* JSON string escaping; bytes >= 0x80 are passed through (callers log UTF-8 or ASCII). */
static void json_str(struct ds_buf *b, const char *s)
{
    ds_buf_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            ds_buf_add(b, e, 2);
        } else if (c < 0x20) {
            ds_buf_printf(b, "\\u%04x", c);
        } else {
            ds_buf_add(b, s, 1);
        }
    }
    ds_buf_add(b, "\"", 1);
}

/* logfmt value: bare when it has no space, quote or '=', else quoted with escapes. */
static void logfmt_val(struct ds_buf *b, const char *s)
{
    if (*s && !strpbrk(s, " \"=\t\n\r\\"))
        ds_buf_add(b, s, strlen(s));
    else
        json_str(b, s);
}

static void field(struct ds_buf *b, const char *k, const char *v, int first)
{
    if (log_format == DS_LOG_JSON) {
        ds_buf_add(b, first ? "{" : ",", 1);
        json_str(b, k);
        ds_buf_add(b, ":", 1);
        json_str(b, v);
    } else {
        if (!first)
            ds_buf_add(b, " ", 1);
        ds_buf_printf(b, "%s=", k);
        logfmt_val(b, v);
    }
}

void ds_log(int level, const char *msg, ...)
{
    if (level < log_level)
        return;
    char ts[40];
    timestamp(ts, sizeof ts);
    char stack[1024];
    struct ds_buf b = {0};
    field(&b, "ts", ts, 1);
    field(&b, "level", level_names[level], 0);
    field(&b, "node", log_node, 0);
    field(&b, "role", log_role, 0);
    field(&b, "msg", msg, 0);
    va_list ap;
    va_start(ap, msg);
    const char *k;
    while ((k = va_arg(ap, const char *))) {
        const char *v = va_arg(ap, const char *);
        field(&b, k, v ? v : "", 0);
    }
    va_end(ap);
    if (log_format == DS_LOG_JSON)
        ds_buf_add(&b, "}", 1);
    ds_buf_add(&b, "\n", 1);
    if (b.oom) {
        snprintf(stack, sizeof stack, "level=%s msg=\"%s\" (log line truncated: no memory)\n",
                 level_names[level], msg);
        fputs(stack, stderr);
    } else {
        fwrite(b.p, 1, b.len, stderr);
    }
    ds_buf_free(&b);
}

int ds_audit_open(const char *path)
{
    if (!*path)
        return 0;
    audit = fopen(path, "a");
    if (!audit)
        return errno;
    setvbuf(audit, NULL, _IOFBF, 64 * 1024);
    return 0;
}

void ds_audit_record(const char *src, const char *identity, const char *method, const char *path,
                     const char *params_json, int status)
{
    if (!audit)
        return;
    char ts[40];
    timestamp(ts, sizeof ts);
    struct ds_buf b = {0};
    ds_buf_printf(&b, "{\"time\":\"%s\",\"node\":", ts);
    json_str(&b, log_node);
    ds_buf_add(&b, ",\"source\":", 10);
    json_str(&b, src);
    ds_buf_add(&b, ",\"identity\":", 12);
    json_str(&b, identity);
    ds_buf_add(&b, ",\"method\":", 10);
    json_str(&b, method);
    ds_buf_add(&b, ",\"path\":", 8);
    json_str(&b, path);
    ds_buf_printf(&b, ",\"params\":%s,\"status\":%d}\n", params_json ? params_json : "null",
                  status);
    if (!b.oom)
        fwrite(b.p, 1, b.len, audit);
    ds_buf_free(&b);
}

void ds_audit_flush(void)
{
    if (audit)
        fflush(audit);
}

void ds_audit_close(void)
{
    if (audit)
        fclose(audit);
    audit = NULL;
}
