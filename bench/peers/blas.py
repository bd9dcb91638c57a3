"""Whether the PyTorch peers run on an optimized BLAS. Debian's torch calls the generic libblas.so.3, which points at
whatever BLAS apt chose: with libopenblas0 missing it is the reference BLAS (~5 GFLOP/s on the benchmark machine,
against ~140 for OpenBLAS), and a peer timed on it would make sdlkit look 20-50x faster than it is. Which library
torch's sgemm binds to cannot be read reliably from the maps (OpenBLAS's liblapack.so.3 carries a BLAS too), so the
check times one GEMM and refuses to go on below a rate no optimized BLAS falls to."""
import ctypes
import os
import sys
import time

import torch

MIN_GFLOPS = 20.0


def require_optimized_blas() -> dict:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 512)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    gflops = 2 * 1024 * 1024 * 512 / best / 1e9
    if gflops < MIN_GFLOPS:
        sys.exit(f"PyTorch's GEMM runs at {gflops:.1f} GFLOP/s, the reference BLAS's speed, which would time the peer "
                 "far too slow: apt-get install libopenblas0-pthread")
    core = None
    with open("/proc/self/maps") as maps:
        openblas = sorted({line.split()[-1] for line in maps if "openblas" in line})
    if openblas:  # the kernel OpenBLAS picked for this processor (OPENBLAS_CORETYPE changes it)
        try:
            lib = ctypes.CDLL(openblas[0])
            lib.openblas_get_corename.restype = ctypes.c_char_p
            core = lib.openblas_get_corename().decode()
        except (OSError, AttributeError):
            pass
    asked = os.environ.get("OPENBLAS_CORETYPE")
    if asked and core and core.lower() != asked.lower():  # OpenBLAS falls back to its own pick without a word
        sys.exit(f"OpenBLAS has no kernel named '{asked}' (it ran {core}): give one of its names, e.g. Haswell, SkylakeX, "
                 "Zen, Cooperlake, or leave --peer-coretype out")
    return {"gemm_gflops": round(gflops, 1), "openblas_core": core}
