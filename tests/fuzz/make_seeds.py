#!/usr/bin/python3
"""Writes the small seed corpora of the fuzz targets (corpus/<target>/) from
the test fixtures and by hand. Run from the repository root with Debian's
/usr/bin/python3 (standard library only). fuzz_model's seeds come from
make_model_seeds.c. Seeds need only be valid inputs; nothing asserts on them."""
import json, os, shutil, struct, zipfile, zlib

FIX = "tests/fixtures"
OUT = "tests/fuzz/corpus"


def put(target, name, data):
    os.makedirs(f"{OUT}/{target}", exist_ok=True)
    with open(f"{OUT}/{target}/{name}", "wb") as f:
        f.write(data)


def npy(descr, shape, payload):
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    d += " " * (64 - (10 + len(d) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode() + payload


# npy: numpy-written fixtures, a 2-D f4, an f8, a v2.0 header
for f in ["f32.arange.npy", "scalar.npy", "empty.npy"]:
    shutil.copy(f"{FIX}/weights/expected/{f}", f"{OUT}/npy/{f}") if os.path.isdir(f"{OUT}/npy") else None
put("npy", "f4_2x3.npy", npy("<f4", "(2, 3)", struct.pack("<6f", *range(6))))
put("npy", "f8_3.npy", npy("<f8", "(3,)", struct.pack("<3d", 1.5, -2, 3)))
d = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
d += " " * (64 - (12 + len(d) + 1) % 64) + "\n"
put("npy", "v2.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", len(d)) + d.encode() + struct.pack("<2f", 1, 2))

# safetensors: the fixture (F32/F16/BF16, metadata)
shutil.copy(f"{FIX}/weights/weights.safetensors", f"{OUT}/safetensors/weights.safetensors")

# pth: whole small archives, and their data.pkl alone (the target wraps a
# non-zip input into an archive with storages archive/data/0..3)
for f in sorted(os.listdir(f"{FIX}/weights")):
    p = f"{FIX}/weights/{f}"
    if f.endswith(".pth") and os.path.getsize(p) <= 4096:
        shutil.copy(p, f"{OUT}/pth/{f}")
        try:
            with zipfile.ZipFile(p) as z:
                for n in z.namelist():
                    if n.endswith("/data.pkl"):
                        put("pth", f + ".pkl", z.read(n))
        except zipfile.BadZipFile:
            pass

# backbone: "name dims..." tables of the fixture backbones
def table(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    lines = []
    for k, v in h.items():
        if k == "__metadata__":
            lines += [f"@{a}={b}" for a, b in v.items()]
        else:
            lines.append(k + " " + " ".join(str(d) for d in v["shape"]))
    return ("\n".join(lines) + "\n").encode()

for f in ["vit/plain.safetensors", "vit/reg_swiglu.safetensors", "vit/plain_hf_f16.safetensors",
          "cnn/mobilenet_tv.safetensors", "cnn/resnet_basic.safetensors"]:
    put("backbone", os.path.basename(f).replace(".safetensors", ".txt"), table(f"{FIX}/{f}"))

# labels.csv
put("labels_csv", "basic.csv", b"filename,split,label,maskfile\na.png,train,0,\nb.png,test,1,masks/b.png\n")
put("labels_csv", "quoted.csv", b'\xef\xbb\xbf"filename","label"\r\n"x,""y"".png",0\r\n\r\n/abs/c.png,1\r\n')
put("labels_csv", "minimal.csv", b"filename\nimg.tif\n")

# checkpoint: the shape fuzz_checkpoint opens (2 scores + 3 patch values,
# batches of 4, 10 tiles): complete, partial and torn
HEADER = b"slide=fuzz.svs\ntile=512\nlevel=0\n" + b"threads=1\n"
def ckpt(n_batches, torn=False):
    out = b"DSWSICK1" + struct.pack("<I", len(HEADER)) + HEADER
    for b in range(n_batches):
        n = min(4, 10 - 4 * b)
        rec = struct.pack("<4I", 0x42525344, b, 4 * b, n) + struct.pack(f"<{n * 5}f", *[0.25 * i for i in range(n * 5)])
        out += rec + struct.pack("<I", zlib.crc32(rec))
    return out[:-7] if torn else out
put("checkpoint", "complete.bin", ckpt(3))
put("checkpoint", "partial.bin", ckpt(1))
put("checkpoint", "torn.bin", ckpt(2, torn=True))
put("checkpoint", "other_threads.bin", ckpt(1).replace(b"threads=1", b"threads=8"))
