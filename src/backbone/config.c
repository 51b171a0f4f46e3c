/* The config files that ship next to ViT weights, read where the tensors
 * cannot tell (head count, LayerNorm eps, normalisation, input size, which
 * implementation's interpolation rule applies):
 *   timm hub config.json (timm/models/_hub.py save_config_for_hf):
 *     {"architecture", "model_args": {"num_heads", "embed_dim", ...},
 *      "pretrained_cfg": {"input_size": [3,H,W], "mean", "std"}}
 *   transformers config.json: {"model_type": "vit"|"dinov2", "hidden_size",
 *     "num_attention_heads", "layer_norm_eps", "image_size"} with
 *     preprocessor_config.json {"image_mean", "image_std"}
 *   open_clip open_clip_config.json: {"model_cfg": {"vision_cfg":
 *     {"timm_model_name", "image_size"}}, "preprocess_cfg": {"mean", "std"}} */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/backbone_internal.h"
#include "core/internal.h"

/* The whole file as a string, NULL if it does not exist or is over 1 MiB
 * (no config is that large). */
static char *read_small(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    char *buf = NULL;
    if (fseek(fp, 0, SEEK_END) == 0) {
        long n = ftell(fp);
        if (n >= 0 && n <= (1 << 20) && fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
                free(buf);
                buf = NULL;
            } else {
                buf[n] = 0;
            }
        }
    }
    fclose(fp);
    return buf;
}

static ds_status parse_near(const char *weights_path, const char *name, cJSON **out, char *path, size_t n) {
    const char *slash = strrchr(weights_path, '/');
    int dl = slash ? (int)(slash - weights_path) : 1;
    snprintf(path, n, "%.*s/%s", dl, slash ? weights_path : ".", name);
    *out = NULL;
    char *text = read_small(path);
    if (!text) return DS_OK;
    *out = cJSON_Parse(text);
    free(text);
    if (!*out) return ds_set_error(DS_ERR_FORMAT, "ds_backbone_load: '%s' (next to the weights) is not valid JSON", path);
    return DS_OK;
}

static const cJSON *item(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static int get_int(const cJSON *o, const char *k) {
    const cJSON *v = item(o, k);
    return cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= 1e6 ? (int)v->valuedouble : 0;
}

/* A 3-vector of positive numbers (std) or numbers in [0, 1] (mean). */
static bool get3(const cJSON *o, const char *k, float v[3], bool positive) {
    const cJSON *a = item(o, k);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 3) return false;
    float t[3];
    for (int i = 0; i < 3; i++) {
        const cJSON *e = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(e) || (positive ? e->valuedouble <= 0 : e->valuedouble < 0) || e->valuedouble > 1) return false;
        t[i] = (float)e->valuedouble;
    }
    memcpy(v, t, sizeof t);
    return true;
}

/* Heads of the timm ViT architectures the models name (timm
 * models/vision_transformer.py model_args); 0 if unknown. */
static int timm_heads(const char *arch) {
    static const struct {
        const char *prefix;
        int heads;
    } T[] = {{"vit_giant_patch14_dinov2", 24}, {"vit_giant_patch14_reg4_dinov2", 24}, {"vit_tiny_", 3},
             {"vit_small_", 6}, {"vit_base_", 12}, {"vit_large_", 16}, {"vit_huge_", 16}, {"vit_giant_", 16},
             {"vit_gigantic_", 16}};
    for (size_t i = 0; arch && i < sizeof T / sizeof *T; i++)
        if (!strncmp(arch, T[i].prefix, strlen(T[i].prefix))) return T[i].heads;
    return 0;
}

static void norm_from(ds_vit_config *c, const cJSON *o, const char *km, const char *ks) {
    float m[3], s[3];
    if (o && get3(o, km, m, false) && get3(o, ks, s, true)) {
        memcpy(c->mean, m, sizeof m);
        memcpy(c->std, s, sizeof s);
        c->has_norm = 1;
    }
}

ds_status ds_vit_config_read(const char *weights_path, ds_vit_config *c) {
    memset(c, 0, sizeof *c);
    char path[1024];
    cJSON *j = NULL;
    ds_status st = parse_near(weights_path, "config.json", &j, path, sizeof path);
    if (st != DS_OK) return st;
    const cJSON *arch = j ? item(j, "architecture") : NULL, *mt = j ? item(j, "model_type") : NULL;
    if (cJSON_IsString(arch)) {
        snprintf(c->source, sizeof c->source, "timm config.json");
        const cJSON *ma = item(j, "model_args"), *pc = item(j, "pretrained_cfg");
        c->n_heads = ma ? get_int(ma, "num_heads") : 0;
        if (!c->n_heads) c->n_heads = timm_heads(arch->valuestring);
        c->embed_dim = get_int(j, "num_features");
        if (ma && get_int(ma, "embed_dim")) c->embed_dim = get_int(ma, "embed_dim");
        norm_from(c, pc, "mean", "std");
        const cJSON *is = pc ? item(pc, "input_size") : NULL;
        if (cJSON_IsArray(is) && cJSON_GetArraySize(is) == 3 && cJSON_IsNumber(cJSON_GetArrayItem(is, 1)))
            c->input_size = (int)cJSON_GetArrayItem(is, 1)->valuedouble;
        c->pos_rule = DS_VIT_POS_TIMM;
    } else if (cJSON_IsString(mt) && (!strcmp(mt->valuestring, "vit") || !strcmp(mt->valuestring, "dinov2"))) {
        snprintf(c->source, sizeof c->source, "transformers config.json");
        c->n_heads = get_int(j, "num_attention_heads");
        c->embed_dim = get_int(j, "hidden_size");
        c->input_size = get_int(j, "image_size");
        const cJSON *eps = item(j, "layer_norm_eps");
        if (cJSON_IsNumber(eps) && eps->valuedouble > 0 && eps->valuedouble < 1) c->ln_eps = (float)eps->valuedouble;
        c->pos_rule = DS_VIT_POS_HF;
        cJSON *pp = NULL;
        char ppath[1024];
        if ((st = parse_near(weights_path, "preprocessor_config.json", &pp, ppath, sizeof ppath)) != DS_OK) {
            cJSON_Delete(j);
            return st;
        }
        norm_from(c, pp, "image_mean", "image_std");
        cJSON_Delete(pp);
    }
    cJSON_Delete(j);
    if (c->source[0]) return DS_OK;

    if ((st = parse_near(weights_path, "open_clip_config.json", &j, path, sizeof path)) != DS_OK) return st;
    const cJSON *vc = j ? item(item(j, "model_cfg"), "vision_cfg") : NULL;
    const cJSON *tn = vc ? item(vc, "timm_model_name") : NULL;
    if (cJSON_IsString(tn)) {
        snprintf(c->source, sizeof c->source, "open_clip_config.json");
        c->n_heads = timm_heads(tn->valuestring);
        c->input_size = get_int(vc, "image_size");
        norm_from(c, item(j, "preprocess_cfg"), "mean", "std");
        c->pos_rule = DS_VIT_POS_TIMM;
    }
    cJSON_Delete(j);
    return DS_OK;
}
