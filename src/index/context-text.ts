// The examples tables' context columns: each example's context tokens and the feature's activation on each (rounded
// to 1e-4) as JSON arrays, "[464,3290,13]" and "[0,1.25,0.0031]". At 16,384 latents the index writes 500k examples,
// 17 numbers twice each: made by the native build in one string per call and cut apart (V8's string concatenation made
// this a third of the writer thread's time); the TypeScript below is the reference, held equal by a test.
import { native } from '../native/kernels.js';
import { round4Array } from '../util/format.js';
import type { StoreParts } from './examples.js';

export interface ContextTexts {
  tokens: string[];
  acts: string[];
}

/** The contexts of the store's slots, in the order given. */
export function contextTexts(s: StoreParts, slots: Int32Array): ContextTexts {
  const mod = native();
  if (!mod) return contextTextsReference(s, slots);
  const { text, ends, exotic } = mod.contextTexts(s.ctxTok, s.ctxAct, s.ctxLen, s.width, slots);
  const tokens: string[] = new Array(slots.length),
    acts: string[] = new Array(slots.length);
  let at = 0;
  for (let q = 0; q < slots.length; q++) {
    tokens[q] = text.slice(at, ends[2 * q]);
    // A value the native path cannot print exactly as String() does (|v| >= 1e11, or not finite) leaves the row here.
    acts[q] = exotic[q] ? actsText(s, slots[q]) : text.slice(ends[2 * q], ends[2 * q + 1]);
    at = ends[2 * q + 1];
  }
  return { tokens, acts };
}

export function contextTextsReference(s: StoreParts, slots: Int32Array): ContextTexts {
  const tokens: string[] = [],
    acts: string[] = [];
  for (const slot of slots) {
    const o = slot * s.width;
    tokens.push(`[${s.ctxTok.subarray(o, o + s.ctxLen[slot]).join(',')}]`);
    acts.push(actsText(s, slot));
  }
  return { tokens, acts };
}

const actsText = (s: StoreParts, slot: number): string => round4Array(s.ctxAct.subarray(slot * s.width, slot * s.width + s.ctxLen[slot]));
