/* dinoscope info MODEL: what a model file holds. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "dinoscope/model.h"

int cmd_info(int argc, char **argv) {
    const char *cmd = "info";
    if (argc != 2 || argv[1][0] == '-') {
        fputs("usage: dinoscope info MODEL\n  Prints the model's metadata (JSON) and its sections.\n",
              argc == 2 && !strcmp(argv[1], "--help") ? stdout : stderr);
        return argc == 2 && !strcmp(argv[1], "--help") ? CLI_OK : CLI_USAGE;
    }
    ds_model *m;
    if (ds_model_load(argv[1], &m) != DS_OK) return cli_lib_error(cmd);
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
