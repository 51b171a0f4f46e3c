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
        printf("  %-24s %-5s [", s->name, ds_section_dtype_name(s->dtype));
        for (int d = 0; d < s->n_dims; d++) printf("%s%lld", d ? ", " : "", (long long)s->shape[d]);
        printf("] %llu bytes\n", (unsigned long long)s->n_bytes);
    }
    /* the banks: representation, bytes, and what f32 would take */
    for (int i = 0; i < ds_model_n_scorers(m); i++) {
        const ds_scorer *sc = ds_model_scorer(m, i);
        const ds_nn_bank *b = ds_scorer_bank(sc);
        if (!b) continue;
        double f32 = 4.0 * (double)ds_nn_bank_rows(b) * (double)ds_scorer_get_dim(sc);
        printf("bank of %s: %s, %lld rows x %d, %zu bytes (%.3g of f32's %.0f)", ds_scorer_kind_name(ds_scorer_get_kind(sc)),
               ds_bank_repr_name(ds_nn_bank_repr(b)), (long long)ds_nn_bank_rows(b), ds_scorer_get_dim(sc),
               ds_nn_bank_bytes(b), (double)ds_nn_bank_bytes(b) / f32, f32);
        int nprobe, nlist;
        ds_nn_bank_ivf_info(b, &nprobe, &nlist);
        if (nlist) printf(", nprobe %d of %d lists", nprobe, nlist);
        printf("\n");
    }
    ds_model_free(m);
    return CLI_OK;
}
