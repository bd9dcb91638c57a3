// Small top-n selections: a feature's nearest and most co-occurring features (the references), its logit lens's tokens, probe candidates.
/**
 * Indices of the n largest values of a (ties: lower index first), best first; only positive values unless `any`.
 * A bounded insertion list with a threshold test per value: no allocation per element, O(len) for small n. With a
 * stride, the values are a[0], a[stride], a[2 stride], ... and index j stands for a[j * stride].
 */
export function topIndices(a: Float32Array | Float64Array | Uint32Array, n: number, any = false, stride = 1): Int32Array {
  const idx = new Int32Array(n),
    val = new Float64Array(n);
  let size = 0;
  const len = Math.floor(a.length / stride);
  for (let j = 0; j < len; j++) {
    const v = a[j * stride];
    if (!any && !(v > 0)) continue;
    if (size === n && !(v > val[n - 1])) continue;
    let p = size < n ? size++ : n - 1;
    while (p > 0 && val[p - 1] < v) {
      val[p] = val[p - 1];
      idx[p] = idx[p - 1];
      p--;
    }
    val[p] = v;
    idx[p] = j;
  }
  return idx.slice(0, size);
}
