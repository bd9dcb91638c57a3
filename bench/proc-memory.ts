// A process's peak resident set, read window by window from /proc (Linux 4.0+).
import { readFileSync, writeFileSync } from 'node:fs';

/**
 * The peak resident set (VmHWM) of a live process in KiB since the last call, which resets it to the current resident
 * set (`5` to /proc/<pid>/clear_refs); undefined once the process is gone. A peak in the microseconds between the read
 * and the reset is lost. Throws when the reset is refused: the windows would silently become the peak so far.
 */
export function peakSinceLast(pid: number): number | undefined {
  let found: string | undefined;
  try {
    found = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
  // An exiting process (a zombie) still has a status file, without its memory lines: gone, not a peak of NaN
  // (a window read at a fit's exit once made a million's peak NaN, written to the JSON as null).
  if (found === undefined) return undefined;
  const hwm = Number(found);
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw new Error(`cannot reset the peak resident set of process ${pid} (/proc/${pid}/clear_refs: ${(e as Error).message}); this needs Linux 4.0 or later`);
  }
  return hwm;
}
