// NaN and infinities in activations: counted natively where the build is loaded (native/src/finite.cc), by the
// reference here otherwise; a test holds the two equal.
import { NATIVE_MIN_LENGTH, native } from '../native/kernels.js';

export function countNonFiniteReference(a: Float32Array): number {
  let bad = 0;
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) bad++;
  return bad;
}

/** How many entries of `a` are NaN or infinite. */
export function countNonFinite(a: Float32Array): number {
  const count = a.length >= NATIVE_MIN_LENGTH ? native()?.countNonFinite : undefined;
  return count ? count(a) : countNonFiniteReference(a);
}

/** `src` copied into `dst` (from its start), returning how many entries are NaN or infinite: one pass where native. */
export function copyCountingNonFinite(src: Float32Array, dst: Float32Array): number {
  const copy = src.length >= NATIVE_MIN_LENGTH ? native()?.copyCountNonFinite : undefined;
  if (copy) return copy(src, dst);
  dst.set(src);
  return countNonFiniteReference(src);
}

/** The index of the first NaN or infinite entry of `a`, or -1 (the slow path, once a count found some). */
export function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}
