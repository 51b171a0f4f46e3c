/* Outputs under failure: a full disk (RLIMIT_FSIZE, as `ulimit -f`: the
 * write fails with EFBIG exactly as with ENOSPC once SIGXFSZ is ignored),
 * two processes writing one path at once, and SIGINT/SIGTERM in the middle
 * of a write (ds_signal_cleanup_install). For every writer of the library:
 * the call fails with one line naming the file, nothing is left at the path
 * but the previous file, intact, and no temp file remains. Also the readers
 * of these files against headers that lie (the fuzzers' findings, replayed). */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/internal.h"
#include "dinoscope/image.h"
#include "dinoscope/model.h"
#include "dinoscope/npy.h"
#include "test.h"
#include "wsi/wsi_internal.h"

static char dir[1024];

static const char *at(const char *name) {
    static char buf[4][1200];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", dir, name);
    return buf[slot];
}

/* Entries of dir whose name has ".tmp." or starts with ".heatmap." */
static int n_temps(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static bool same_file(const char *path, const unsigned char *want, size_t n) {
    size_t got_n = 0;
    unsigned char *got = test_read_bytes(path, &got_n);
    bool ok = got && got_n == n && memcmp(got, want, n) == 0;
    free(got);
    return ok;
}

/* The file limit of `ulimit -f`: writes past it fail with EFBIG. */
static struct rlimit saved_limit;
static void disk_full_at(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_limit);
    struct rlimit r = saved_limit;
    r.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &r);
}
static void disk_not_full(void) { setrlimit(RLIMIT_FSIZE, &saved_limit); }

static bool one_line_naming(const char *msg, const char *path) {
    return strstr(msg, path) != NULL && strchr(msg, '\n') == NULL;
}

/* A good previous output at path: its bytes are returned for comparing. */
static unsigned char *previous(const char *path, size_t *n) {
    static const char prev[] = "the previous, complete output\n";
    ds_write_file_atomic(path, prev, sizeof prev - 1);
    return test_read_bytes(path, n);
}

static void check_full_disk(const char *what, const char *path, ds_status st, const unsigned char *prev, size_t prev_n) {
    char s[256];
    snprintf(s, sizeof s, "%s on a full disk fails with DS_ERR_IO", what);
    test_cond(s, st == DS_ERR_IO);
    snprintf(s, sizeof s, "%s on a full disk: one line naming the file", what);
    test_cond(s, one_line_naming(ds_last_error(), path));
    if (!one_line_naming(ds_last_error(), path)) printf("     message: %s\n", ds_last_error());
    snprintf(s, sizeof s, "%s on a full disk leaves the previous file intact", what);
    test_cond(s, same_file(path, prev, prev_n));
    snprintf(s, sizeof s, "%s on a full disk leaves no temp file", what);
    test_cond(s, n_temps() == 0);
}

static void test_full_disk(void) {
    enum { N = 64 * 1024 }; /* floats: 256 KB, over the 64 KB limit */
    float *x = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = (float)i;
    size_t prev_n;
    unsigned char *prev;

    prev = previous(at("raw.bin"), &prev_n);
    disk_full_at(64 * 1024);
    ds_status st = ds_write_file_atomic(at("raw.bin"), x, sizeof(float) * N);
    disk_not_full();
    check_full_disk("ds_write_file_atomic", at("raw.bin"), st, prev, prev_n);
    free(prev);

    prev = previous(at("feats.npy"), &prev_n);
    int64_t shape[2] = {256, 256};
    disk_full_at(64 * 1024);
    st = ds_npy_write_f32(at("feats.npy"), x, 2, shape);
    disk_not_full();
    check_full_disk("ds_npy_write_f32", at("feats.npy"), st, prev, prev_n);
    free(prev);

    prev = previous(at("stream.npy"), &prev_n);
    ds_npy_writer *w = NULL;
    disk_full_at(64 * 1024);
    st = ds_npy_writer_open(at("stream.npy"), 2, shape, &w);
    for (int r = 0; st == DS_OK && r < 256; r++) st = ds_npy_writer_append(w, x + 256 * r, 256);
    ds_status st2 = ds_npy_writer_close(w, st == DS_OK, 256);
    disk_not_full();
    check_full_disk("ds_npy_writer", at("stream.npy"), st != DS_OK ? st : st2, prev, prev_n);
    free(prev);

    /* a k-NN model of 256 images x 256 channels: 256 KB of arrays */
    ds_scorer_params sp = ds_scorer_defaults();
    sp.n_threads = 1;
    ds_scorer *s = NULL;
    test_cond("a k-NN scorer fits for the model-file case", ds_scorer_fit(DS_SCORER_KNN, &sp, x, 256, 1, 256, &s) == DS_OK);
    ds_model_info info = {0};
    strcpy(info.backbone_file, "w.safetensors");
    strcpy(info.backbone_arch, "test");
    info.prep = ds_preprocess_defaults();
    info.n_layers = info.grid_h = info.grid_w = 1;
    info.dim = 256;
    info.n_train = 256;
    const ds_scorer *one[1] = {s};
    prev = previous(at("model.dsm"), &prev_n);
    disk_full_at(64 * 1024);
    st = ds_model_save(at("model.dsm"), &info, one, NULL, 1);
    disk_not_full();
    check_full_disk("ds_model_save", at("model.dsm"), st, prev, prev_n);
    free(prev);
    test_cond("ds_model_save writes the same model once the disk has room",
              ds_model_save(at("model.dsm"), &info, one, NULL, 1) == DS_OK && n_temps() == 0);
    ds_model *m = NULL;
    test_cond("and that model loads", ds_model_load(at("model.dsm"), &m) == DS_OK);
    ds_model_free(m);
    ds_scorer_free(s);

    /* PNG through libvips: 256 x 256 noise does not compress below 64 KB */
    ds_image *img = ds_image_create(256, 256, 3);
    unsigned seed = 1;
    for (size_t i = 0; i < 256 * 256 * 3; i++) img->pixels[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 24);
    prev = previous(at("overlay.png"), &prev_n);
    disk_full_at(64 * 1024);
    st = ds_image_save_png(at("overlay.png"), img);
    disk_not_full();
    check_full_disk("ds_image_save_png", at("overlay.png"), st, prev, prev_n);
    free(prev);
    ds_image_free(img);

    /* the slide checkpoint: a record cut by the full disk is dropped on
     * resume, the records before it are kept */
    const char *ck = at("checkpoint.bin");
    ds_ckpt *c = NULL;
    int64_t done = -1;
    bool trunc, soft;
    st = ds_ckpt_open(ck, "slide=a\n", "threads=1\n", 0, 1, 4096, 4, 8, &c, &done, &trunc, &soft);
    test_cond("a new checkpoint opens", st == DS_OK && done == 0);
    float *vals = calloc(4 * 4097, sizeof(float));
    test_cond("its first batch is appended", ds_ckpt_append(c, 0, 0, 4, vals) == DS_OK);
    struct stat sb;
    stat(ck, &sb);
    disk_full_at((rlim_t)sb.st_size + 1000);
    st = ds_ckpt_append(c, 1, 4, 4, vals);
    disk_not_full();
    test_cond("appending the second batch on a full disk fails with DS_ERR_IO naming the checkpoint",
              st == DS_ERR_IO && one_line_naming(ds_last_error(), ck));
    ds_ckpt_close(c);
    st = ds_ckpt_open(ck, "slide=a\n", "threads=1\n", 1, 1, 4096, 4, 8, &c, &done, &trunc, &soft);
    test_cond("the checkpoint resumes with the first batch kept and the torn one cut off",
              st == DS_OK && done == 1 && trunc);
    ds_ckpt_close(c);
    free(vals);
    free(x);
}

/* Two processes write the same path 40 times each, 1 MB of their own byte;
 * every read meanwhile and the final file are one writer's whole output. */
static void test_concurrent_writers(void) {
    enum { SZ = 1 << 20, ROUNDS = 40 };
    const char *path = at("shared.bin");
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            unsigned char *b = malloc(SZ);
            memset(b, 'A' + k, SZ);
            for (int r = 0; r < ROUNDS; r++)
                if (ds_write_file_atomic(path, b, SZ) != DS_OK) _exit(1);
            _exit(0);
        }
    }
    int reads = 0, torn = 0, alive = 2, ok = 1;
    while (alive > 0) {
        for (int k = 0; k < 2; k++) {
            int status;
            if (kids[k] > 0 && waitpid(kids[k], &status, WNOHANG) == kids[k]) {
                ok &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
                kids[k] = -1;
                alive--;
            }
        }
        size_t n = 0;
        unsigned char *b = test_read_bytes(path, &n);
        if (!b) continue; /* not yet written */
        reads++;
        bool whole = n == SZ && (b[0] == 'A' || b[0] == 'B');
        for (size_t j = 0; whole && j < n; j++) whole = b[j] == b[0];
        torn += !whole;
        free(b);
    }
    test_cond("two processes writing one path at once both succeed", ok);
    size_t n = 0;
    unsigned char *b = test_read_bytes(path, &n);
    bool whole = b && n == SZ && (b[0] == 'A' || b[0] == 'B');
    for (size_t j = 0; whole && j < n; j++) whole = b[j] == b[0];
    free(b);
    test_cond("the result is one complete file from one of them", whole);
    printf("     (%d reads while they wrote, %d torn)\n", reads, torn);
    test_cond("no read while they wrote saw a mix or a partial file", torn == 0);
    test_cond("no temp file is left", n_temps() == 0);
}

/* A child starts a streaming .npy write, then gets sig: it must die of sig
 * with its temp file removed and the previous output untouched. */
static void test_signal(int sig, const char *name) {
    const char *path = at("interrupted.npy");
    size_t prev_n;
    unsigned char *prev = previous(path, &prev_n);
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        if (ds_signal_cleanup_install() != DS_OK) _exit(2);
        ds_npy_writer *w;
        int64_t shape[2] = {1000, 64};
        float row[64] = {0};
        if (ds_npy_writer_open(path, 2, shape, &w) != DS_OK) _exit(3);
        for (int r = 0; r < 500; r++) ds_npy_writer_append(w, row, 64);
        fflush(NULL);
        if (write(fds[1], "r", 1) != 1) _exit(4);
        for (;;) pause(); /* interrupted here, in the middle of the output */
    }
    close(fds[1]);
    char c = 0;
    bool started = read(fds[0], &c, 1) == 1 && c == 'r';
    close(fds[0]);
    char s[200];
    snprintf(s, sizeof s, "a writer in progress had its temp file on disk before %s", name);
    test_cond(s, started && n_temps() == 1);
    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    snprintf(s, sizeof s, "%s ends the process by that signal (exit status 128+%d in a shell)", name, sig);
    test_cond(s, WIFSIGNALED(status) && WTERMSIG(status) == sig);
    snprintf(s, sizeof s, "%s removes the temp file", name);
    test_cond(s, n_temps() == 0);
    snprintf(s, sizeof s, "%s leaves the previous output intact", name);
    test_cond(s, same_file(path, prev, prev_n));
    free(prev);
}

static void test_write_errors(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/no/such/folder/out.npy", dir);
    float v = 1;
    int64_t shape[1] = {1};
    test_cond("writing into a missing folder fails with DS_ERR_IO naming the file",
              ds_npy_write_f32(path, &v, 1, shape) == DS_ERR_IO && one_line_naming(ds_last_error(), path));
    test_cond("ds_write_file_atomic writes the bytes and leaves no temp file",
              ds_write_file_atomic(at("small.txt"), "abc", 3) == DS_OK && same_file(at("small.txt"), (const unsigned char *)"abc", 3) &&
                  n_temps() == 0);
    test_cond("ds_write_file_atomic writes an empty file",
              ds_write_file_atomic(at("empty.txt"), NULL, 0) == DS_OK && same_file(at("empty.txt"), (const unsigned char *)"", 0));
    enum { N_SLOTS = 65536, N_TRY = N_SLOTS + 100 };
    static int slots[N_TRY];
    int got = 0;
    for (int i = 0; i < N_TRY; i++) got += (slots[i] = ds_temp_register("x")) >= 0;
    test_cond("ds_temp_register holds 65536 paths (one preprocess run of that many images) and then says -1",
              got == N_SLOTS);
    for (int i = 0; i < N_TRY; i++) ds_temp_unregister(slots[i]);
    test_cond("slots are free again after ds_temp_unregister", (slots[0] = ds_temp_register("x")) >= 0);
    ds_temp_unregister(slots[0]);
}

/* Readers check what a header declares before they allocate or convert. */
static void test_lying_headers(void) {
    /* fuzz_npy's finding: '<f8', shape (1390011477,) in 142 bytes (11 GB) */
    const char *npy = "fuzz/corpus/npy/regress_huge_f8_shape.npy"; /* relative to tests/ */
    char path[2048];
    snprintf(path, sizeof path, "%s/../%s", test_env("DS_FIXTURES", "tests/fixtures"), npy);
    float *x = NULL;
    int nd = 0;
    int64_t shape[DS_NPY_MAX_DIMS];
    ds_status st = ds_npy_read_f32(path, &x, &nd, shape);
    test_cond("a 142-byte .npy declaring 11 GB is refused as truncated before anything is allocated",
              st == DS_ERR_FORMAT && strstr(ds_last_error(), "declares 11120091816 bytes, the file holds 4") && x == NULL);

    /* a model whose metadata says size 1e300: refused, not converted */
    static const char meta[] =
        "{\"backbone\": {\"file\": \"w\", \"sha256\": \"0\", \"arch\": \"a\"}, \"preprocess\": {\"size\": 1e300, "
        "\"layers\": 1, \"stain_norm\": \"none\", \"clahe_clip\": 2, \"clahe_tiles\": 8}, \"features\": {\"grid_h\": 1, "
        "\"grid_w\": 1, \"dim\": 1}, \"n_train\": 1, \"scorers\": []}";
    ds_model_writer *w = NULL;
    int64_t len = (int64_t)strlen(meta);
    st = ds_model_writer_open(at("lying.dsm"), &w);
    if (st == DS_OK) st = ds_model_writer_add(w, "meta", DS_SECTION_BYTES, 1, &len, meta, (uint64_t)len);
    if (st == DS_OK) st = ds_model_writer_close(w, 1);
    ds_model *m = NULL;
    test_cond("a model whose metadata says size 1e300 is refused naming the field",
              st == DS_OK && ds_model_load(at("lying.dsm"), &m) == DS_ERR_FORMAT &&
                  strstr(ds_last_error(), "'size' = 1e+300, expected an integer") && m == NULL);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/atomic", test_env("DS_TMP", "/tmp"));
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0) test_skip("cannot create DS_TMP");
    signal(SIGXFSZ, SIG_IGN); /* as on a full disk: an error, not a kill */
    if (ds_image_init() != DS_OK) test_skip("libvips did not start");
    test_write_errors();
    test_lying_headers();
    test_full_disk();
    test_concurrent_writers();
    test_signal(SIGTERM, "SIGTERM");
    test_signal(SIGINT, "SIGINT");
    test_report();
}
