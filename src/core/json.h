/* JSON request/response helpers over cJSON: strict parsing of request bodies (UTF-8 checked, object
 * expected, unknown fields refused) and typed field access whose errors name the field. */
#ifndef DS_CORE_JSON_H
#define DS_CORE_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DS_JSON_ERR_MAX 160

enum ds_json_err {
    DS_JSON_OK = 0,
    DS_JSON_EPARSE = 1,   /* not JSON, not UTF-8, or not an object */
    DS_JSON_EFIELD = 2,   /* a field is missing, of the wrong type, out of range or unknown */
    DS_JSON_ENOMEM = 3,
};

/* true when buf[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
bool ds_utf8_valid(const char *buf, size_t len);

/* Parse a request body that must be one JSON object.  On success *out is a new object the caller
 * frees with cJSON_Delete; on failure *out is NULL and err says what is wrong. */
int ds_json_parse_object(const char *body, size_t len, cJSON **out, char *err);

/* Refuse members of obj not named in `allowed` (NULL-terminated). */
int ds_json_only_fields(const cJSON *obj, const char *const *allowed, char *err);

/* Typed getters.  A missing optional field leaves *out unchanged and returns DS_JSON_OK.
 * Strings: borrowed from obj (valid while obj lives), 1..maxlen bytes, no NUL. */
int ds_json_get_str(const cJSON *obj, const char *name, bool required, size_t maxlen,
                    const char **out, char *err);
/* Whole numbers in [min, max]; also accepted as a decimal string (for values above 2^53). */
int ds_json_get_u64(const cJSON *obj, const char *name, bool required, uint64_t min, uint64_t max,
                    uint64_t *out, char *err);
int ds_json_get_bool(const cJSON *obj, const char *name, bool required, bool *out, char *err);

/* A decimal whole number with nothing else (no sign, no spaces, no overflow): 0, else -1. */
int ds_parse_u64(const char *s, uint64_t *out);

/* Print obj compactly into a malloc'd string (caller frees with free); NULL on allocation failure
 * (or where cJSON_PrintUnformatted fails: the bytes are the same as its). */
char *ds_json_print(const cJSON *obj, size_t *len);

/* Writers for answers built without a cJSON tree, byte for byte as ds_json_print would print the
 * same value: a string (NULL as ""), and a number (-1 only when out of memory). */
struct ds_buf;
void ds_json_put_str(struct ds_buf *b, const char *s);
int ds_json_put_number(struct ds_buf *b, double d);

/* The error body of DESIGN.md §3: {"error":{"code":code,"message":message}} into buf (always
 * NUL-terminated, message escaped).  Returns the length written. */
size_t ds_json_error_body(char *buf, size_t buflen, const char *code, const char *message);

#endif
