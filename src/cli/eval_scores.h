/* eval --scores (eval_scores.c). */
#ifndef DS_CLI_EVAL_SCORES_H
#define DS_CLI_EVAL_SCORES_H
#include "cli/eval_data.h"
#include "dinoscope/report.h"

/* Adds every test image of items to r with its scores from the score tables
 * named in list (comma-separated CSV paths of `dinoscope score`), matched
 * by path; the tables' columns must include each of m's scorers. Prints the
 * error (a missing or doubled row, a foreign table); CLI_OK or CLI_ERROR. */
int eval_scores_report(const char *cmd, const char *list, const ds_model *m, const eval_items *items, ds_report *r);
#endif
