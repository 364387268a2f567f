/* Structured logging (logfmt / JSON lines on stderr) and the buffered audit log. */
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/json.h"

static char log_node[64] = "-";
static char log_role[16] = "-";
static int log_level = DS_LOG_INFO;
static int log_format = DS_LOG_LOGFMT;
static FILE *audit;
static struct ds_buf audit_line; /* reused for every record (one at a time, on the loop thread) */

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

/* ISO 8601 UTC with milliseconds ("2026-01-02T03:04:05.678Z", 24 bytes + NUL); the part up to the
 * seconds is formatted once per second. */
static void timestamp(char buf[40])
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[32];
    static _Thread_local size_t cached_len;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        cached_len = strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = ts.tv_sec;
    }
    long ms = ts.tv_nsec / 1000000;
    memcpy(buf, cached, cached_len);
    char *p = buf + cached_len;
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    *p++ = 'Z';
    *p = 0;
}

/* JSON string escaping; bytes >= 0x80 are passed through (callers log UTF-8 or ASCII). */
static void json_str(struct ds_buf *b, const char *s)
{
    ds_buf_add(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        ds_buf_add(b, run, (size_t)(s - run));
        run = s + 1;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            ds_buf_add(b, e, 2);
        } else {
            static const char hex[] = "0123456789abcdef";
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            ds_buf_add(b, e, 6);
        }
    }
    ds_buf_add(b, run, (size_t)(s - run));
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
    timestamp(ts);
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
    static char buf[64 * 1024]; /* glibc ignores the size when it allocates the buffer itself */
    setvbuf(audit, buf, _IOFBF, sizeof buf);
    return 0;
}

void ds_audit_record(const char *src, const char *identity, const char *method, const char *path,
                     const char *params_json, int status)
{
    if (!audit)
        return;
    struct ds_buf *b = &audit_line;
    char ts[40];
    timestamp(ts);
    b->len = 0;
    b->oom = 0;
    ds_buf_add(b, "{\"time\":\"", 9);
    ds_buf_add(b, ts, strlen(ts));
    ds_buf_add(b, "\",\"node\":", 9);
    json_str(b, log_node);
    ds_buf_add(b, ",\"source\":", 10);
    json_str(b, src);
    ds_buf_add(b, ",\"identity\":", 12);
    json_str(b, identity);
    ds_buf_add(b, ",\"method\":", 10);
    json_str(b, method);
    ds_buf_add(b, ",\"path\":", 8);
    json_str(b, path);
    ds_buf_add(b, ",\"params\":", 10);
    params_json = params_json ? params_json : "null";
    ds_buf_add(b, params_json, strlen(params_json));
    ds_buf_add(b, ",\"status\":", 10);
    if (ds_json_put_number(b, status)) /* as "%d" */
        b->oom = 1;
    ds_buf_add(b, "}\n", 2);
    if (!b->oom)
        fwrite(b->p, 1, b->len, audit);
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
    ds_buf_free(&audit_line);
}
