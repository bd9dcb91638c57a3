// onnxruntime-node for the commands that run a model; fit, index, query and export never load it.
import type * as Ort from 'onnxruntime-node';
import { lazyModule } from '../util/lazy.js';

export const onnxRuntime = lazyModule<typeof Ort>('onnxruntime-node');
