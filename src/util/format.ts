// Numbers as the index's JSON text writes them. V8's shortest round-trip printing of a double is the slow part of
// writing examples (a context's 17 activations each): a value rounded to 1e-4 is printed from its integer count of
// ten-thousandths instead, with the same characters String() gives for Math.round(v * 1e4) / 1e4.

/** String(Math.round(v * 1e4) / 1e4), from integers: "0", "-1.25", "3.0001"; non-finite and huge values via String(). */
export function round4Text(v: number): string {
  const r = Math.round(v * 1e4);
  // Past 1e15 ten-thousandths a value could need an exponent or more digits than the integer path keeps.
  if (!(Math.abs(r) < 1e15)) return String(r / 1e4);
  if (r === 0) return '0'; // also -0, which String() prints as "0"
  const a = r < 0 ? -r : r;
  const whole = Math.floor(a / 1e4);
  const frac = a - whole * 1e4;
  const head = r < 0 ? `-${whole}` : `${whole}`;
  if (frac === 0) return head;
  // Four digits with leading zeros, trailing zeros dropped: 500 -> "05", 1 -> "0001".
  let digits = `${frac}`;
  digits = '0000'.slice(digits.length) + digits;
  let end = 4;
  while (digits.charCodeAt(end - 1) === 48) end--;
  return `${head}.${digits.slice(0, end)}`;
}

/** A JSON array of values rounded to 1e-4: `[0.5,1.2346,0]`. */
export function round4Array(a: ArrayLike<number>): string {
  let s = '[';
  for (let i = 0; i < a.length; i++) s += i ? `,${round4Text(a[i])}` : round4Text(a[i]);
  return `${s}]`;
}
