/* Leveled structured log lines on stderr (logfmt or JSON, with node id and role) and the audit log
 * (one JSON line per mutating client request). */
#ifndef DS_CORE_LOG_H
#define DS_CORE_LOG_H

#include "core/config.h"

/* Set the fields every line carries; strings are copied.  Before this, lines go out as node=-. */
void ds_log_init(const char *node, const char *role, int level, int format);

/* One line: msg plus NULL-terminated (key, value) string pairs, e.g.
 * ds_log(DS_LOG_INFO, "listening", "addr", addr, NULL). */
void ds_log(int level, const char *msg, ...) __attribute__((sentinel));

int ds_log_enabled(int level);

/* Open the audit log (append mode; "" disables it).  Returns 0 or errno. */
int ds_audit_open(const char *path);
/* One record: time, source address, identity ("" when anonymous), method, path, parameters (a
 * JSON object text, or NULL), status.  Buffered; see ds_audit_flush. */
void ds_audit_record(const char *src, const char *identity, const char *method, const char *path,
                     const char *params_json, int status);
/* Write buffered records out (called by a periodic timer and at shutdown). */
void ds_audit_flush(void);
void ds_audit_close(void);

#endif
