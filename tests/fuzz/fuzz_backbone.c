/* Architecture inference from the weights (ds_backbone_load: DINOv2 ViT,
 * MobileNetV2, ResNet detection and every shape check), then one forward
 * pass (64x32 or 28x14 input) of backbones of up to 64 K weights. The input is a tensor table, one tensor a line:
 *     <name> <dim0> <dim1> ...
 * and "@<key>=<value>" lines for __metadata__; this target writes the
 * safetensors file for it (F32 zeros), so that mutations change names and
 * shapes instead of breaking the container (fuzz_safetensors covers that).
 * At most 1 M elements in all, 64 tensors of up to 4 dims. */
#include "dinoscope/backbone.h"
#include "fuzz_util.h"

enum { MAX_T = 512, MAX_ELEMS = 1 << 20 };

static int json_str(char *dst, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (o + 7 >= cap) return -1;
        if (ch == '"' || ch == '\\') dst[o++] = '\\', dst[o++] = (char)ch;
        else if (ch < 0x20 || ch >= 0x7f) o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", ch);
        else dst[o++] = (char)ch;
    }
    dst[o] = 0;
    return (int)o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 64 * 1024) return 0;
    char *txt = malloc(size + 1), *hdr = malloc(1 << 20), *meta = malloc(1 << 16);
    if (!txt || !hdr || !meta) abort();
    memcpy(txt, data, size);
    txt[size] = 0;
    size_t ho = 0, mo = 0, off = 0;
    int nt = 0;
    ho += (size_t)snprintf(hdr, 1 << 20, "{");
    meta[0] = 0;
    int bad = 0;
    for (char *line = txt, *next; line && *line && !bad; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (line[0] == '@') {
            char *eq = strchr(line, '=');
            if (!eq) continue;
            char k[256], v[1024];
            if (json_str(k, sizeof k, line + 1, (size_t)(eq - line - 1)) < 0 || json_str(v, sizeof v, eq + 1, strlen(eq + 1)) < 0)
                continue;
            if (mo + strlen(k) + strlen(v) + 8 >= (1 << 16)) continue;
            mo += (size_t)snprintf(meta + mo, (1 << 16) - mo, "%s\"%s\":\"%s\"", mo ? "," : "", k, v);
            continue;
        }
        char *sp = strchr(line, ' ');
        if (!sp || sp == line) continue;
        *sp = 0;
        long long dims[4];
        int nd = 0;
        long long count = 1;
        char *p = sp + 1;
        while (*p && nd < 4) {
            char *end;
            long long d = strtoll(p, &end, 10);
            if (end == p) break;
            if (d < 0 || d > MAX_ELEMS) bad = 1;
            dims[nd++] = d;
            count *= d < 0 || d > MAX_ELEMS ? 1 : d;
            if (count > MAX_ELEMS) bad = 1;
            p = end;
        }
        if (bad || nt == MAX_T || off / 4 + (size_t)count > MAX_ELEMS) {
            bad = 1;
            break;
        }
        char name[512];
        if (json_str(name, sizeof name, line, strlen(line)) < 0) continue;
        if (ho + 700 >= (1 << 20)) break;
        ho += (size_t)snprintf(hdr + ho, (1 << 20) - ho, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", nt ? "," : "", name);
        for (int d = 0; d < nd; d++) ho += (size_t)snprintf(hdr + ho, (1 << 20) - ho, "%s%lld", d ? "," : "", dims[d]);
        ho += (size_t)snprintf(hdr + ho, (1 << 20) - ho, "],\"data_offsets\":[%zu,%zu]}", off, off + 4 * (size_t)count);
        off += 4 * (size_t)count;
        nt++;
    }
    if (!bad && nt > 0) {
        if (mo) ho += (size_t)snprintf(hdr + ho, (1 << 20) - ho, ",\"__metadata__\":{%s}", meta);
        ho += (size_t)snprintf(hdr + ho, (1 << 20) - ho, "}");
        while (ho % 8) hdr[ho++] = ' ';
        const char *path = fz_path("in.safetensors");
        FILE *fp = fopen(path, "wb");
        uint64_t hl = ho;
        /* the data are zeros: a sparse tail (ftruncate) instead of writing them */
        if (!fp || fwrite(&hl, 8, 1, fp) != 1 || fwrite(hdr, 1, ho, fp) != ho || fflush(fp) != 0 ||
            ftruncate(fileno(fp), (off_t)(8 + ho + off)) != 0 || fclose(fp) != 0)
            abort();
        ds_backbone *bb = NULL;
        ds_backbone_params bp = {.n_threads = 1};
        if (ds_backbone_load(path, &bp, &bb) == DS_OK) {
            (void)ds_backbone_describe(bb);
            int s = ds_backbone_stride(bb), gh, gw, D;
            if (s > 0 && s <= 64 && ds_backbone_grid(bb, 2 * s, s, &gh, &gw, &D) == DS_OK && off / 4 <= (1 << 16)) {
                float *in = calloc((size_t)3 * 2 * s * s, sizeof(float));
                float *feats = malloc(sizeof(float) * (size_t)gh * gw * (size_t)D);
                if (!in || !feats) abort();
                (void)ds_backbone_forward(bb, in, 1, 2 * s, s, 1, feats, NULL);
                free(in);
                free(feats);
            }
            ds_backbone_free(bb);
        }
    }
    free(txt);
    free(hdr);
    free(meta);
    return 0;
}
