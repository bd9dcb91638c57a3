import type { Argv } from 'yargs';
import { loadModel } from '../models/model.js';
import { GraphIndex } from '../onnx/graph.js';
import { DATA_TYPE_NAMES } from '../onnx/proto.js';
import { SITES, canonical } from '../onnx/hooks.js';
import { printJson } from './common.js';

export function register(y: Argv): Argv {
  return y.command(
    'inspect <model>',
    "Show a model's inputs, op histogram and every hook point sdlkit resolves",
    (a) =>
      a
        .positional('model', { type: 'string', describe: 'model folder or .onnx file', demandOption: true })
        .option('tokenizer', { type: 'string', describe: 'tokenizer file, when not beside the model' })
        .option('json', { type: 'boolean', default: false })
        .example('sdl inspect models/sdl-tiny', '')
        .example('sdl inspect ../shared/models/tiny-random-gpt2/past.onnx', ''),
    (argv) => {
      const m = loadModel(argv.model!, { tokenizer: argv.tokenizer });
      // The graph needs no tokenizer; one that is present is described (and must be readable).
      const tok = m.tokenizerPath ? m.tokenizer : undefined;
      const ix = new GraphIndex(m.proto.graph);
      const inputs = ix.runtimeInputs().map((i) => ({ name: i.name, type: DATA_TYPE_NAMES[i.elemType] ?? String(i.elemType), shape: i.shape ?? null }));
      const outputs = m.proto.graph.outputs.map((o) => o.name);
      const hooks = [];
      for (let l = 0; l < m.hooks.nLayers; l++)
        for (const s of SITES) {
          const name = canonical(l, s);
          const p = m.hooks.points.get(name);
          hooks.push(
            p
              ? { name, tensor: p.tensor, via: p.via, ...(p.extraNodes ? { added_nodes: p.extraNodes.map((n) => n.opType) } : {}) }
              : { name, tensor: null, missing: m.hooks.missing.get(name) ?? 'not found' },
          );
        }
      const summary = {
        model: m.onnxPath,
        sha256: m.sha256,
        producer: m.proto.producerName,
        ir_version: m.proto.irVersion,
        opsets: m.proto.opsets,
        vocab_size: m.vocabSize,
        tokenizer: tok ? { path: m.tokenizerPath, kind: tok.kind, vocab_size: tok.vocabSize, bos: tok.bos } : null,
        context_length: Number.isFinite(m.contextLength) ? m.contextLength : null,
        layers: m.hooks.nLayers,
        nodes: m.proto.graph.nodes.length,
        initializers: m.proto.graph.initializers.length,
        inputs,
        outputs,
        ops: Object.fromEntries(ix.opHistogram()),
        hooks,
      };
      if (argv.json) return printJson(summary);
      console.log(
        `${m.onnxPath}\n  producer ${summary.producer || '?'}, IR ${summary.ir_version}, opsets ${m.proto.opsets.map((o) => `${o.domain || 'ai.onnx'}:${o.version}`).join(' ')}`,
      );
      console.log(
        `  ${summary.nodes} nodes, ${summary.initializers} initializers, ${m.hooks.nLayers} layers, vocab ${m.vocabSize} (${tok ? `tokenizer ${tok.kind}, ${tok.vocabSize} tokens, BOS ${tok.bos.token}` : 'no tokenizer'}), context ${summary.context_length ?? 'unknown'}`,
      );
      console.log('inputs:');
      for (const i of inputs) console.log(`  ${i.name}  ${i.type} [${(i.shape ?? []).join(', ')}]`);
      console.log(`outputs: ${outputs.join(', ')}`);
      console.log('ops:');
      console.log(
        '  ' +
          ix
            .opHistogram()
            .map(([k, v]) => `${k} ${v}`)
            .join(', '),
      );
      console.log('hooks:');
      for (const h of hooks) {
        if ('missing' in h) console.log(`  ${h.name.padEnd(26)} -- missing: ${h.missing}`);
        else console.log(`  ${h.name.padEnd(26)} ${h.tensor}  (${h.via}${h.added_nodes ? `, adds ${h.added_nodes.join('+')}` : ''})`);
      }
    },
  );
}
