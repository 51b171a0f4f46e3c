/* Finding the labelled images of `dinoscope eval` (eval_data.c). */
#ifndef DS_CLI_EVAL_DATA_H
#define DS_CLI_EVAL_DATA_H

#include "cli/cli.h"

typedef struct {
    char *path, *mask, *defect;
    int label; /* 0/1 */
    bool test; /* false: a normal training image (cross-validation only) */
} eval_item;

typedef struct {
    eval_item *v;
    int n, cap;
} eval_items;

/* Lists the images of --data (labels.csv, a folder with one, or MVTec AD):
 * the test images, and with want_train the normal training images too (for
 * --folds). *layout names the layout found. Prints the error; CLI_OK or
 * CLI_ERROR. */
int eval_find_items(const char *cmd, const char *data, bool want_train, eval_items *it, const char **layout);
void eval_items_free(eval_items *it);

#endif
