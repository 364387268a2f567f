/* libFuzzer target: request-body decoding (UTF-8 check, JSON object, typed field access). */
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *o;
    char err[DS_JSON_ERR_MAX];
    if (ds_json_parse_object((const char *)data, size, &o, err))
        return 0;
    static const char *const fields[] = {"resource", "client_id", "mode", "ttl_ms", NULL};
    const char *s;
    uint64_t u;
    bool b;
    ds_json_only_fields(o, fields, err);
    ds_json_get_str(o, "resource", true, 256, &s, err);
    ds_json_get_u64(o, "ttl_ms", false, 1, UINT64_MAX, &u, err);
    ds_json_get_bool(o, "wait", false, &b, err);
    char body[256];
    ds_json_error_body(body, sizeof body, "bad_request", err);
    cJSON_Delete(o);
    return 0;
}
