/* Named ViT presets: what the published models' cards and configs say that
 * the tensors cannot (normalisation, input size, head count, feature rules).
 * Sources, per entry: the model card's timm.create_model / transforms call or
 * the repository's config.json / preprocessor_config.json. */
#include <string.h>

#include "dinoscope/backbone.h"

#define IMAGENET_MEAN {0.485f, 0.456f, 0.406f}
#define IMAGENET_STD {0.229f, 0.224f, 0.225f}

static const ds_backbone_preset PRESETS[] = {
    /* facebookresearch/dinov2 torch.hub models: img_size 518, ImageNet */
    {"dinov2", "facebook/dinov2 (torch.hub, HF)", IMAGENET_MEAN, IMAGENET_STD, 518, 4, 0, DS_EMBED_CLS, 0, 0},
    /* MahmoodLab/UNI: vit_large_patch16_224, init_values 1e-5, dynamic_img_size; ImageNet */
    {"uni", "MahmoodLab/UNI", IMAGENET_MEAN, IMAGENET_STD, 224, 4, 16, DS_EMBED_CLS, 1, 0},
    /* MahmoodLab/UNI2-h: depth 24, 1536 dims, 24 heads, SwiGLUPacked, 8 registers, no_embed_class */
    {"uni2-h", "MahmoodLab/UNI2-h", IMAGENET_MEAN, IMAGENET_STD, 224, 4, 24, DS_EMBED_CLS, 1, 0},
    /* paige-ai/Virchow2: vit_huge_patch14_224 (16 heads), 4 registers, SwiGLUPacked;
     * embedding = concat(class token, mean of patch tokens) */
    {"virchow2", "paige-ai/Virchow2", IMAGENET_MEAN, IMAGENET_STD, 224, 4, 16, DS_EMBED_CLS_MEAN, 1, 0},
    /* bioptimus/H-optimus-0: ViT-g/14 (24 heads), 4 registers; its own mean/std */
    {"h-optimus-0", "bioptimus/H-optimus-0", {0.707223f, 0.578729f, 0.703617f}, {0.211883f, 0.230117f, 0.177517f},
     224, 4, 24, DS_EMBED_CLS, 1, 0},
    /* prov-gigapath/prov-gigapath tile encoder: giant, patch 16, 24 heads; ImageNet */
    {"prov-gigapath", "prov-gigapath/prov-gigapath", IMAGENET_MEAN, IMAGENET_STD, 224, 4, 24, DS_EMBED_CLS, 1, 0},
    /* microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224: timm
     * vit_base_patch16_224 trunk (12 heads), OpenAI CLIP mean/std */
    {"biomedclip", "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", {0.48145466f, 0.4578275f, 0.40821073f},
     {0.26862954f, 0.26130258f, 0.27577711f}, 224, 4, 12, DS_EMBED_CLS, 1, 0},
    /* owkin/phikon: HF ViTModel, iBOT ViT-B/16 (12 heads), ImageNet */
    {"phikon", "owkin/phikon", IMAGENET_MEAN, IMAGENET_STD, 224, 4, 12, DS_EMBED_CLS, 0, 1},
    /* owkin/phikon-v2: HF Dinov2Model ViT-L/16 (16 heads), ImageNet */
    {"phikon-v2", "owkin/phikon-v2", IMAGENET_MEAN, IMAGENET_STD, 224, 4, 16, DS_EMBED_CLS, 0, 1},
    /* microsoft/rad-dino: HF Dinov2Model ViT-B/14 (12 heads) at 518; its
     * preprocessor_config mean/std; backbone_compatible.safetensors (official
     * names) keeps the torch.hub interpolation */
    {"rad-dino", "microsoft/rad-dino", {0.5307f, 0.5307f, 0.5307f}, {0.2583f, 0.2583f, 0.2583f}, 518, 4, 12,
     DS_EMBED_CLS, 0, 1},
};

int ds_backbone_preset_count(void) { return (int)(sizeof PRESETS / sizeof *PRESETS); }

const ds_backbone_preset *ds_backbone_preset_get(int i) {
    return i >= 0 && i < ds_backbone_preset_count() ? &PRESETS[i] : NULL;
}

const ds_backbone_preset *ds_backbone_preset_find(const char *name) {
    if (!name) return NULL;
    for (int i = 0; i < ds_backbone_preset_count(); i++)
        if (!strcmp(PRESETS[i].name, name)) return &PRESETS[i];
    return NULL;
}

const char *ds_backbone_preset_in(const char *describe) {
    const char *p = describe ? strstr(describe, " preset=") : NULL;
    if (!p) return NULL;
    p += strlen(" preset=");
    size_t n = strcspn(p, " ");
    for (int i = 0; i < ds_backbone_preset_count(); i++)
        if (strlen(PRESETS[i].name) == n && !strncmp(PRESETS[i].name, p, n)) return PRESETS[i].name;
    return NULL;
}
