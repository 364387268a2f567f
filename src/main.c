/* dsyncd: parse options, load and validate the configuration, start the chosen role. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/node.h"
#include "net/tls.h"

#define EXIT_CONFIG 2

static const char usage[] =
    "usage: dsyncd [--config FILE] [--role lock|queue|cache] [--node-id ID] [--listen ADDR:PORT]\n"
    "              [--data-dir DIR] [--check-config] [--help] [--version]\n"
    "\n"
    "  -c, --config FILE     INI file (see conf/dsyncd.example.ini); without one, dsyncd runs the\n"
    "                        embedded single-node default on 127.0.0.1 with self-made certificates\n"
    "  -r, --role ROLE       lock, queue or cache (overrides [node] role)\n"
    "  -n, --node-id ID      overrides [node] id\n"
    "  -l, --listen ADDR     host:port to listen on (overrides [node] listen)\n"
    "  -d, --data-dir DIR    overrides [node] data_dir\n"
    "      --check-config    validate the configuration, print it and exit\n"
    "  -h, --help            this text\n"
    "  -V, --version         print the version\n"
    "\n"
    "Precedence: command line > environment (DSYNCD_<SECTION>_<KEY>, SHARED_MAC_KEY,\n"
    "INTERNAL_PORT) > INI file > defaults.  Configuration errors exit with status 2.\n";

static const char *env(const char *name)
{
    return getenv(name);
}

struct cli {
    const char *config;
    int check;
    struct {
        const char *key, *value, *opt;
    } set[8];
    int nset;
};

static int parse_args(int argc, char **argv, struct cli *cli)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"role", required_argument, NULL, 'r'},
        {"node-id", required_argument, NULL, 'n'},  {"listen", required_argument, NULL, 'l'},
        {"data-dir", required_argument, NULL, 'd'}, {"check-config", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},           {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "c:r:n:l:d:hV", opts, NULL)) != -1) {
        const char *key = NULL, *opt = NULL;
        switch (o) {
        case 'c': cli->config = optarg; continue;
        case 'C': cli->check = 1; continue;
        case 'h': fputs(usage, stdout); exit(0);
        case 'V': printf("dsyncd %s\n", DS_VERSION); exit(0);
        case 'r': key = "role", opt = "--role"; break;
        case 'n': key = "id", opt = "--node-id"; break;
        case 'l': key = "listen", opt = "--listen"; break;
        case 'd': key = "data_dir", opt = "--data-dir"; break;
        default: fputs(usage, stderr); return EXIT_CONFIG;
        }
        if (cli->nset < 8) {
            cli->set[cli->nset].key = key;
            cli->set[cli->nset].value = optarg;
            cli->set[cli->nset++].opt = opt;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dsyncd: unexpected argument '%s'\n%s", argv[optind], usage);
        return EXIT_CONFIG;
    }
    return 0;
}

/* The embedded default (and any configuration without [tls] cert): certificates made in
 * <data_dir>/certs on first start, reused afterwards. */
static int embedded_tls(struct ds_config *c)
{
    char dir[DS_CONFIG_PATH_MAX + 8], err[DS_TLS_ERR_MAX];
    snprintf(dir, sizeof dir, "%s/certs", c->data_dir);
    char parent[DS_CONFIG_PATH_MAX];
    snprintf(parent, sizeof parent, "%s", c->data_dir);
    if (access(parent, F_OK) != 0 && mkdir(parent, 0755) != 0) {
        fprintf(stderr, "dsyncd: cannot create data directory %s\n", parent);
        return 1;
    }
    if (ds_tls_ensure_self_signed(dir, err)) {
        fprintf(stderr, "dsyncd: %s\n", err);
        return 1;
    }
    snprintf(c->tls_cert, sizeof c->tls_cert, "%s/server.crt", dir);
    snprintf(c->tls_key, sizeof c->tls_key, "%s/server.key", dir);
    return 0;
}

int main(int argc, char **argv)
{
    struct cli cli = {0};
    int rv = parse_args(argc, argv, &cli);
    if (rv)
        return rv;
    static struct ds_config cfg;
    char err[DS_CONFIG_ERR_MAX];
    ds_config_defaults(&cfg);
    if (cli.config && ds_config_load_file(&cfg, cli.config, err))
        goto config_error;
    if (ds_config_load_env(&cfg, env, err))
        goto config_error;
    for (int i = 0; i < cli.nset; i++)
        if (ds_config_set_cli(&cfg, "node", cli.set[i].key, cli.set[i].value, cli.set[i].opt, err))
            goto config_error;
    if (ds_config_finish(&cfg, err))
        goto config_error;
    if (cfg.tls_cert[0]) { /* certificate and key must load, not only be readable */
        struct ds_tls *t;
        char terr[DS_TLS_ERR_MAX];
        if (ds_tls_server_new(&cfg, &t, terr)) {
            fprintf(stderr, "dsyncd: %s\n", terr);
            return EXIT_CONFIG;
        }
        ds_tls_free(t);
    }
    if (cli.check) {
        char buf[16384];
        ds_config_describe(&cfg, buf, sizeof buf);
        printf("%s: configuration ok\n%s", cfg.file[0] ? cfg.file : "(embedded default)", buf);
        return 0;
    }
    ds_log_init(cfg.node_id, cfg.role, cfg.log_level, cfg.log_format);
    int embedded = !cfg.tls_cert[0];
    if (embedded && embedded_tls(&cfg))
        return 1;
    if (embedded) {
        char hint[DS_CONFIG_PATH_MAX + 200];
        snprintf(hint, sizeof hint, "curl --cacert %s/certs/ca.crt %s/health", cfg.data_dir,
                 cfg.advertise_url);
        ds_log(DS_LOG_WARN, "no [tls] cert configured: using certificates made for this node in "
                            "the data directory (single-node use only)",
               "dir", cfg.data_dir, "try", hint, NULL);
        if (!cli.config)
            fprintf(stderr, "\ndsyncd %s: %s node running with the embedded defaults.\n"
                            "  try: %s\n\n",
                    DS_VERSION, cfg.role, hint);
    }
    return ds_node_run(&cfg);
config_error:
    fprintf(stderr, "dsyncd: %s\n", err);
    return EXIT_CONFIG;
}
