/* libFuzzer target: the JSON scanner (core/jscan.c).  Beyond not crashing, it checks the scanner's
 * contract: whatever it accepts as one value cJSON parses too, a string it decodes equals cJSON's,
 * and a value's end is reported inside the input. */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/jscan.h"
#include "core/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *end = s + size, *out;
    if (!ds_utf8_valid(s, size))
        return 0;
    if (ds_js_skip(s, end, &out) != DS_JS_OK) {
        if (out < s || out > end)
            abort();
        return 0;
    }
    if (out <= s || out > end)
        abort();
    cJSON *j = cJSON_ParseWithLength(s, (size_t)(out - s));
    if (!j)
        abort(); /* accepted by the scanner, refused by cJSON */
    if (cJSON_IsString(j)) {
        char buf[256];
        size_t len;
        int rv = ds_js_string(s, end, buf, sizeof buf, &len, &out);
        if (rv == DS_JS_OK && strcmp(buf, j->valuestring) != 0)
            abort();
        if (rv == DS_JS_EINVAL)
            abort();
    }
    cJSON_Delete(j);
    return 0;
}
