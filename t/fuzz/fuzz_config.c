/* libFuzzer target: the INI configuration loader on arbitrary file contents. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/dsyncd-fuzz-config-%d.ini", (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    static struct ds_config c;
    char err[DS_CONFIG_ERR_MAX];
    ds_config_defaults(&c);
    if (ds_config_load_file(&c, path, err) == 0)
        ds_config_finish(&c, err);
    return 0;
}
