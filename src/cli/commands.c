/* The subcommands (main.c dispatches, tests walk them). */
#include "cli/cli.h"
#include "dinoscope/dinoscope.h"

const cli_command cli_commands[] = {
    {"extract", cmd_extract, "DINOv2 patch features of images -> .npy"},
    {"preprocess", cmd_preprocess, "write the exact images the network sees"},
    {"fit", cmd_fit, "fit anomaly scorers on normal images -> model file"},
    {"merge", cmd_merge, "merge partial models of fit --shard (or score CSVs of score --shard)"},
    {"score", cmd_score, "score images with a model; anomaly maps and overlays"},
    {"info", cmd_info, "show what a model file holds"},
    {"slide", cmd_slide, "score whole-slide images: heatmaps, QuPath annotations, resumable"},
    {"eval", cmd_eval, "evaluate a model on a labelled test set -> report"},
    {"volume", cmd_volume, "fit on / score NIfTI volumes and DICOM series slice by slice (2.5D); NIfTI maps"},
    {"help", cmd_help, "a command's help, its man page (--man) or the bash completion (--completion)"},
};
const int cli_n_commands = (int)(sizeof cli_commands / sizeof cli_commands[0]);

void cli_usage(FILE *fp) {
    fprintf(fp, "dinoscope %s: anomaly detection with frozen DINOv2 features\n\nusage: dinoscope <command> [options]\n\n",
            ds_version());
    for (size_t i = 0; i < (size_t)cli_n_commands; i++)
        fprintf(fp, "  %-12s %s\n", cli_commands[i].name, cli_commands[i].summary);
    fprintf(fp, "\n'dinoscope <command> --help' shows a command's options.\n");
}
