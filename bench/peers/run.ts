// Running the PyTorch peers (bench/peers/*.py) in an environment set up so that they run as fast as this machine
// lets them: a comparison with a hobbled peer says nothing.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/**
 * OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset (this workplace sets them for older OpenBLAS builds; with them set
 * OpenBLAS picks a slower kernel), unless `coretype` names the kernel to use (on a processor newer than Debian's
 * OpenBLAS, the one it picks may not be the fastest: bench's `--peer-coretype`).
 *
 * glibc's malloc is told to keep freed memory instead of giving it back: PyTorch allocates each step's large
 * temporaries afresh (the sparsify-style step's [k B, d] index_add operand is 268 MB at 512 x 4,096), and glibc
 * serves blocks that large with mmap and returns them with munmap, so every step touched new pages. On a VM where a
 * page first touched costs a hypervisor fault that made the peer's index_add 1,059 ms instead of 63 ms and its Adam
 * 76 ms instead of 5 ms (512 x 4,096, 2 threads). sdlkit keeps its buffers from step to step; so now does the peer.
 */
export function peerEnv(coretype = ''): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  if (coretype) env.OPENBLAS_CORETYPE = coretype;
  env.MALLOC_MMAP_MAX_ = '0'; // every block from the heap, none mmapped...
  env.MALLOC_TRIM_THRESHOLD_ = String(2 ** 40); // ...and the heap never trimmed back to the system
  env.MALLOC_TOP_PAD_ = String(2 ** 30); // grown 1 GiB at a time rather than by each block's size
  return env;
}

/** What a peer printed: its tokens/s and the BLAS it checked as it started (blas.py). */
export interface PeerResult {
  tokens_per_second: number;
  blas: { gemm_gflops: number; openblas_core: string | null };
}

/**
 * Runs one peer script with Debian's python3. Without torch it returns the apt command to show in the table (the
 * bench then reports sdlkit alone); any other failure (the reference BLAS, an OpenBLAS kernel name it does not know,
 * a crash) would leave the comparison silently incomplete, so the bench stops there: one line, exit 2.
 */
export function runPeer(script: string, args: (string | number)[], coretype: string): PeerResult | string {
  const r = spawnSync('/usr/bin/python3', [join(process.cwd(), 'bench/peers', script), ...args.map(String)], { encoding: 'utf8', env: peerEnv(coretype) });
  if (r.status === 0) return JSON.parse(r.stdout) as PeerResult;
  if (/No module named 'torch'/.test(r.stderr)) return 'torch missing: apt-get install python3-torch libopenblas0-pthread';
  console.error(`bench: the peer ${script} failed: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`);
  process.exit(2);
}
