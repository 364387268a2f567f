/* A growable byte buffer for building responses and encodings without libevent. */
#ifndef DS_CORE_BUF_H
#define DS_CORE_BUF_H

#include <stddef.h>

struct ds_buf {
    char *p;     /* owned; NUL-terminated after every append when cap > 0 */
    size_t len;
    size_t cap;
    int oom;     /* set when an append failed for lack of memory; later appends are ignored */
};

/* Append bytes / formatted text.  On allocation failure the buffer keeps what it had and oom is set. */
void ds_buf_add(struct ds_buf *b, const void *data, size_t len);
void ds_buf_printf(struct ds_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Free the storage and reset to empty. */
void ds_buf_free(struct ds_buf *b);

#endif
