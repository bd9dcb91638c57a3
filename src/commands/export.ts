import type { Argv } from 'yargs';
import { join } from 'node:path';
import { Dictionary } from '../sdl/dictionary.js';
import { dictionaryToOnnx } from '../export/onnx.js';
import { exportSaelens } from '../export/saelens.js';
import { checkOutput, writeAtomic } from '../util/fsx.js';
import { spliceMany, spliceModel } from '../export/splice.js';
import { exportCircuitTracer } from '../export/circuit-tracer.js';
import { bindModel } from '../intervene/bind.js';
import { UserError } from '../util/errors.js';
import { defaultModel } from './common.js';

export function register(y: Argv): Argv {
  return y.command(
    'export <dictionary>',
    'Write a dictionary as a standalone ONNX model, a SAELens folder or (CLTs) a circuit-tracer folder',
    (a) =>
      a
        .positional('dictionary', { type: 'string', demandOption: true, describe: 'dictionary folder (sdl fit output)' })
        .option('format', { choices: ['onnx', 'saelens', 'circuit-tracer'] as const, default: 'onnx' as const })
        .option('out', { type: 'string', describe: 'output file (onnx) or folder (saelens); default inside the dictionary folder' })
        .option('encoder-only', { type: 'boolean', default: false, describe: 'onnx: only the features output' })
        .option('fp16', { type: 'boolean', default: false, describe: 'onnx: store weights as float16' })
        .option('splice', { type: 'boolean', default: false, describe: 'onnx: write the model with the dictionary spliced in at its hook (needs --model)' })
        .option('model', { type: 'string', describe: 'with --splice: the model (default: the one the dictionary was trained on)' })
        .example('sdl export cache/dicts/my-sae --format onnx', 'writes cache/dicts/my-sae/dictionary.onnx')
        .example('sdl export cache/dicts/my-sae --format saelens --out my-sae-saelens', '')
        .example('sdl export cache/dicts/my-clt --format circuit-tracer', 'a CLT as W_enc_i/W_dec_i files + config.yaml (circuit-tracer load_clt)')
        .example('sdl export cache/dicts/my-clt --splice', "the model with every MLP output replaced by the CLT's reconstruction"),
    async (argv) => {
      const d = Dictionary.load(argv.dictionary!);
      if (argv.format === 'onnx' && argv.splice && d.cfg.kind === 'clt') {
        const { model: m, inputs, outputs } = await bindModel(d, { spec: argv.model, dictDir: argv.dictionary!, fallback: defaultModel });
        const out = argv.out ?? join(argv.dictionary!, 'spliced.onnx');
        checkOutput(out, 'file');
        writeAtomic(
          out,
          spliceMany(
            m.bytes,
            outputs.map((h, l) => ({ target: h.tensor, rep: { kind: 'clt-layer' as const, dict: d, layer: l, input: inputs[l].tensor } })),
          ),
        );
        console.log(`wrote ${out}: ${m.name} with every MLP output (${outputs.length} layers) replaced by the CLT's reconstruction (position 0 kept)`);
      } else if (argv.format === 'onnx' && argv.splice) {
        if (d.cfg.sitesIn.length > 1)
          throw new UserError(`a ${d.cfg.kind} reads several sites and cannot be spliced into one forward pass; 'sdl eval' measures it in two stages`);
        const {
          model: m,
          inputs: [hin],
          outputs: [hout],
        } = await bindModel(d, { spec: argv.model, dictDir: argv.dictionary!, fallback: defaultModel });
        const out = argv.out ?? join(argv.dictionary!, 'spliced.onnx');
        checkOutput(out, 'file');
        writeAtomic(out, spliceModel(m.bytes, m.proto, hout.tensor, { kind: 'dictionary', dict: d, input: hin.tensor }));
        console.log(`wrote ${out}: ${m.name} with ${hout.name} replaced by the dictionary's reconstruction (position 0 kept)`);
      } else if (argv.format === 'onnx') {
        const out = argv.out ?? join(argv.dictionary!, argv['encoder-only'] ? 'encoder.onnx' : 'dictionary.onnx');
        checkOutput(out, 'file');
        const bytes = dictionaryToOnnx(d, { encoderOnly: argv['encoder-only'], fp16: argv.fp16 });
        writeAtomic(out, bytes);
        console.log(
          `wrote ${out} (${(bytes.length / 1e6).toFixed(2)} MB): input x [batch, ${d.cfg.dIn}], outputs features [batch, ${d.cfg.dSae}]${argv['encoder-only'] ? '' : ', reconstruction'}`,
        );
      } else if (argv.format === 'circuit-tracer') {
        const out = argv.out ?? join(argv.dictionary!, 'circuit-tracer');
        exportCircuitTracer(d, out);
        console.log(`wrote ${out}: W_enc_i/W_dec_i.safetensors for ${d.cfg.sitesIn.length} layers + config.yaml (circuit-tracer's load_clt layout)`);
      } else {
        const out = argv.out ?? join(argv.dictionary!, 'saelens');
        exportSaelens(d, out);
        console.log(`wrote ${out}: cfg.json + sae_weights.safetensors (SAELens ${d.cfg.kind}, loads with SAE.load_from_disk)`);
      }
    },
  );
}
