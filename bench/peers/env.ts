// The environment the PyTorch peers run in (bench/peers/*.py), set up so that they run as fast as this machine lets
// them: a comparison with a hobbled peer says nothing.

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
