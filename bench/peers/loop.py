"""What the PyTorch peers share: the update after a step's loss (Adam, with the decoder rows kept at unit norm and
the gradient's component along each row removed first, as SAELens and sparsify do), the timed loop, and the command
line (positional arguments, tokens per second printed as JSON with torch's version and the BLAS check's figures)."""
import json
import sys
import time
from typing import Callable, Sequence

import torch
from blas import require_optimized_blas


def sae_init(d_in: int, d_sae: int, batch: int) -> tuple:
    """The SAE peers' start (sdlkit's bench makes the same): four batches of standard normal rows, unit-norm random
    decoder rows W_dec [d_sae, d_in], zero biases; the caller makes W_enc = W_dec^T in its own orientation."""
    torch.manual_seed(0)
    x_all = torch.randn(batch * 4, d_in)
    W_dec = torch.randn(d_sae, d_in)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_dec.requires_grad_(True)
    b_enc = torch.zeros(d_sae, requires_grad=True)
    b_dec = torch.zeros(d_in, requires_grad=True)
    return [(x_all[j * batch:(j + 1) * batch],) for j in range(4)], W_dec, b_enc, b_dec


def unit_norm_update(opt: torch.optim.Optimizer, loss: torch.Tensor, decoders: Sequence[torch.Tensor]) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for w in decoders:
            w.grad -= (w.grad * w).sum(1, keepdim=True) * w
    opt.step()
    with torch.no_grad():
        for w in decoders:
            w.div_(w.norm(dim=1, keepdim=True))


def tokens_per_second(step: Callable[..., None], batches: Sequence[tuple], batch: int, steps: int, warmup: int) -> float:
    """step(*batches[i % len(batches)]) warmup times untimed, then steps times timed."""
    for i in range(warmup):
        step(*batches[i % len(batches)])
    t0 = time.perf_counter()
    for i in range(steps):
        step(*batches[i % len(batches)])
    return steps * batch / (time.perf_counter() - t0)


def main(bench: Callable[..., float], types: Sequence[type]) -> None:
    """bench(*argv converted by types, warmup=3) on 2 threads once the BLAS is checked."""
    def refuse(why: str) -> None:
        print(f"{sys.argv[0]}: {why}: see bench/peers/run.ts's callers", file=sys.stderr)
        sys.exit(2)

    if len(sys.argv) != 1 + len(types):
        refuse(f"takes {len(types)} arguments ({len(sys.argv) - 1} given)")
    try:
        args = [t(a) for t, a in zip(types, sys.argv[1:])]
    except ValueError as e:
        refuse(f"a bad argument ({e})")
    torch.set_num_threads(2)
    blas = require_optimized_blas()
    print(json.dumps({"tokens_per_second": bench(*args, 3), "torch": torch.__version__, "blas": blas}))
