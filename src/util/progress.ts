// Progress lines with rate and ETA: redrawn in place on a TTY, one line every few seconds otherwise.
export class Progress {
  private readonly t0 = performance.now();
  private lastPrint = 0;
  private readonly tty = Boolean(process.stderr.isTTY);

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly unit = 'tok',
    private readonly startAt = 0,
    private readonly quiet = false,
  ) {}

  update(done: number, extra = ''): void {
    if (this.quiet) return;
    const now = performance.now();
    if (now - this.lastPrint < (this.tty ? 200 : 5000) && done < this.total) return;
    this.lastPrint = now;
    const secs = (now - this.t0) / 1000;
    const rate = secs > 0 ? (done - this.startAt) / secs : 0;
    const eta = rate > 0 ? (this.total - done) / rate : Infinity;
    const pct = this.total > 0 ? ((100 * done) / this.total).toFixed(1) : '0.0';
    const line = `${this.label} ${fmtCount(done)}/${fmtCount(this.total)} ${this.unit} (${pct}%) ${fmtCount(rate)} ${this.unit}/s ETA ${fmtDuration(eta)}${extra ? ` ${extra}` : ''}`;
    if (this.tty) process.stderr.write(`\r\x1b[K${line}`);
    else process.stderr.write(`${line}\n`);
  }

  done(message?: string): void {
    if (this.quiet) return;
    if (this.tty) process.stderr.write('\r\x1b[K');
    if (message) process.stderr.write(`${message}\n`);
  }
}

export function fmtCount(n: number): string {
  if (!Number.isFinite(n)) return '?';
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n));
}

/** Bytes in the largest unit that keeps a digit before the point: 512 B, 3.2 MB, 1.5 TB (powers of 1000). */
export function fmtBytes(b: number): string {
  if (!Number.isFinite(b)) return '?';
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB'];
  let u = 0;
  while (b >= 1000 && u < units.length - 1) {
    b /= 1000;
    u++;
  }
  return u === 0 ? `${Math.round(b)} B` : `${b.toFixed(1)} ${units[u]}`;
}

export function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
