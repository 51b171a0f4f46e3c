/* dinoscope info MODEL: what a model file holds. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"

static const cli_spec info_spec = {"info", "MODEL", "  Prints the model's metadata (JSON) and its sections.\n", "MODEL",
                                   true};

int cmd_info(int argc, char **argv) {
    const char *cmd = "info";
    cli_positional pos;
    int rc = cli_parse(&info_spec, NULL, 0, argc, argv, &pos);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    if (pos.n != 1) {
        free(pos.v);
        fprintf(stderr, "dinoscope info: give one model file (see 'dinoscope info --help')\n");
        return CLI_USAGE;
    }
    ds_model *m;
    rc = ds_model_load(pos.v[0], &m) == DS_OK ? CLI_OK : cli_lib_error(cmd);
    free(pos.v);
    if (rc != CLI_OK) return rc;
    printf("%s\n", ds_model_meta_json(m));
    const ds_model_file *f = ds_model_get_file(m);
    printf("sections:\n");
    for (int i = 0; i < ds_model_file_n_sections(f); i++) {
        const ds_model_section *s = ds_model_file_section_at(f, i);
        printf("  %-24s %-5s [", s->name, s->dtype == DS_SECTION_F32 ? "f32" : "bytes");
        for (int d = 0; d < s->n_dims; d++) printf("%s%lld", d ? ", " : "", (long long)s->shape[d]);
        printf("] %llu bytes\n", (unsigned long long)s->n_bytes);
    }
    ds_model_free(m);
    return CLI_OK;
}
