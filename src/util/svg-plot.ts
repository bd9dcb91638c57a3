// Line charts as standalone SVG (no dependencies): one or more panels side by side, each with its own y axis,
// shared series colours and a legend. Enough for experiment write-ups that render on GitHub and in browsers.

export interface Series {
  name: string;
  points: [number, number][];
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Fixed y range; default: from the data (with 0 included). */
  yMin?: number;
  yMax?: number;
  logY?: boolean;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function ticks(lo: number, hi: number, n = 5): number[] {
  const span = hi - lo || 1;
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= n) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const fmt = (v: number) => (Math.abs(v) >= 1000 ? `${(v / 1000).toFixed(v % 1000 === 0 ? 0 : 1)}k` : String(Number(v.toPrecision(3))));

export function lineChart(panels: Panel[], opts: { width?: number; height?: number; title?: string } = {}): string {
  const W = opts.width ?? 420,
    H = opts.height ?? 300;
  const m = { l: 58, r: 14, t: 34, b: 44 };
  const names = [...new Set(panels.flatMap((p) => p.series.map((s) => s.name)))];
  const legendH = 22;
  const top = opts.title ? 26 : 0;
  const parts: string[] = [];
  panels.forEach((p, pi) => {
    const ox = pi * W;
    const xs = p.series.flatMap((s) => s.points.map((q) => q[0]));
    const tf = (v: number) => (p.logY ? Math.log10(Math.max(v, 1e-12)) : v);
    const ys = p.series.flatMap((s) => s.points.map((q) => tf(q[1])));
    const x0 = Math.min(...xs),
      x1 = Math.max(...xs);
    let y0 = p.yMin !== undefined ? tf(p.yMin) : Math.min(...ys, p.logY ? Infinity : 0);
    let y1 = p.yMax !== undefined ? tf(p.yMax) : Math.max(...ys);
    if (y1 === y0) {
      y1 += 1;
      y0 -= p.logY ? 1 : 0;
    }
    const px = (x: number) => ox + m.l + ((x - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
    const py = (y: number) => top + m.t + (1 - (tf(y) - y0) / (y1 - y0)) * (H - m.t - m.b);
    parts.push(`<text x="${ox + W / 2}" y="${top + 20}" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`);
    parts.push(`<rect x="${ox + m.l}" y="${top + m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#888"/>`);
    for (const t of ticks(x0, x1)) {
      parts.push(`<line x1="${px(t)}" x2="${px(t)}" y1="${top + H - m.b}" y2="${top + H - m.b + 4}" stroke="#888"/>`);
      parts.push(`<text x="${px(t)}" y="${top + H - m.b + 16}" text-anchor="middle" font-size="11">${fmt(t)}</text>`);
    }
    // Log axes: decades when the range spans two or more, else 1-2-5 steps between the ends.
    const decades = p.logY ? ticks(Math.floor(y0), Math.ceil(y1)).filter((v) => Number.isInteger(v) && v >= y0 - 1e-9 && v <= y1 + 1e-9) : [];
    const yt = !p.logY ? ticks(y0, y1) : decades.length >= 2 ? decades.map((v) => 10 ** v) : ticks(10 ** y0, 10 ** y1).filter((v) => v > 0);
    for (const t of yt) {
      const y = py(t);
      if (y < top + m.t - 1 || y > top + H - m.b + 1) continue;
      parts.push(`<line x1="${ox + m.l}" x2="${ox + W - m.r}" y1="${y}" y2="${y}" stroke="#eee"/>`);
      parts.push(
        `<text x="${ox + m.l - 6}" y="${y + 4}" text-anchor="end" font-size="11">${p.logY && decades.length >= 2 ? t.toExponential(0) : fmt(t)}</text>`,
      );
    }
    parts.push(`<text x="${ox + (m.l + W - m.r) / 2}" y="${top + H - 8}" text-anchor="middle" font-size="12">${esc(p.xLabel)}</text>`);
    parts.push(`<text transform="translate(${ox + 14},${top + (m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(p.yLabel)}</text>`);
    for (const s of p.series) {
      const c = COLORS[names.indexOf(s.name) % COLORS.length];
      const d = s.points.map((q, i) => `${i ? 'L' : 'M'}${px(q[0]).toFixed(1)},${py(q[1]).toFixed(1)}`).join('');
      parts.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="1.8"/>`);
    }
  });
  const totalW = W * panels.length,
    totalH = top + H + legendH;
  const legend = names.map((n, i) => {
    const x = 20 + i * 200;
    return `<line x1="${x}" x2="${x + 24}" y1="${top + H + 10}" y2="${top + H + 10}" stroke="${COLORS[i % COLORS.length]}" stroke-width="3"/><text x="${x + 30}" y="${top + H + 14}" font-size="12">${esc(n)}</text>`;
  });
  const title = opts.title ? `<text x="${totalW / 2}" y="18" text-anchor="middle" font-size="15" font-weight="bold">${esc(opts.title)}</text>` : '';
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${totalW}" height="${totalH}" viewBox="0 0 ${totalW} ${totalH}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${title}\n${parts.join('\n')}\n${legend.join('\n')}\n</svg>\n`;
}
