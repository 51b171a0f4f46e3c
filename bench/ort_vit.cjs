// ONNX Runtime (onnxruntime-node, CPU execution provider) side of
// bench/bench_speed.py: loads MODEL.onnx (exported by `bench_speed.py
// export`), reads B images [B,3,S,S] f32 from INPUT, warms up once, then
// serves stdin commands like bench_vit --serve: "run" -> {"ms": ...},
// "feats PATH" -> writes the last output (f32), "quit" ends.
//   ORT_NODE_DIR=<dir holding node_modules/onnxruntime-node> node ort_vit.cjs MODEL INPUT S B THREADS
// Session: graphOptimizationLevel 'all', intraOpNumThreads THREADS, 1
// inter-op thread, and intra-op spinning off: the bench runs 5
// implementations in turn on the same cores, and a spinning idle pool would
// steal CPU from the others (the same reason the CLI sets OMP_WAIT_POLICY).
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const ort = require(path.join(process.env.ORT_NODE_DIR || '.', 'node_modules', 'onnxruntime-node'));

async function main() {
  const [model, input, S, B, threads] = process.argv.slice(2);
  const s = Number(S), b = Number(B);
  const buf = fs.readFileSync(input);
  const n = b * 3 * s * s;
  const data = new Float32Array(buf.buffer, buf.byteOffset, n).slice();
  const sess = await ort.InferenceSession.create(model, {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: Number(threads),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  });
  const feeds = { [sess.inputNames[0]]: new ort.Tensor('float32', data, [b, 3, s, s]) };
  let t0 = process.hrtime.bigint();
  let out = (await sess.run(feeds))[sess.outputNames[0]];
  const warm = Number(process.hrtime.bigint() - t0) / 1e6;
  console.log(JSON.stringify({ ready: 1, warmup_ms: warm, version: ort.env.versions ? ort.env.versions.common : '' }));
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (line === 'run') {
      t0 = process.hrtime.bigint();
      out = (await sess.run(feeds))[sess.outputNames[0]];
      console.log(JSON.stringify({ ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    } else if (line.startsWith('feats ')) {
      fs.writeFileSync(line.slice(6), Buffer.from(out.data.buffer, out.data.byteOffset, out.data.byteLength));
      console.log(JSON.stringify({ written: 1 }));
    } else {
      break;
    }
  }
  rl.close();
}
main().catch((e) => { console.error('ort_vit: ' + e.message); process.exit(1); });
