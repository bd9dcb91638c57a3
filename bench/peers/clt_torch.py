"""PyTorch reference cross-layer transcoder step for sdlkit's CLT benchmark: per-layer encoders (one batched
matmul), per-layer TopK (k per layer) or ReLU, each layer's decoder writing its own and every later layer's
output (dense matmuls, as PyTorch CLT trainers do), loss = mean over tokens of the summed squared error of every
layer's output, Adam, unit-norm decoder rows (each feature's concatenated writes) with the parallel gradient
removed. fp32, 2 threads. Prints tokens per second as JSON. Run with Debian's python3."""
import json
import sys
import time

import torch
from blas import require_optimized_blas


def bench(layers: int, d: int, n: int, activation: str, k: int, batch: int, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    L = layers
    x_all = torch.randn(4, batch, L, d)
    y_all = torch.randn(4, batch, L, d)
    W_enc = (torch.randn(L, d, n) * 0.1 / d ** 0.5).requires_grad_(True)
    b_enc = torch.zeros(L, n, requires_grad=True)
    W_dec = []
    for l in range(L):
        w = torch.randn(n, (L - l) * d)
        W_dec.append((w / w.norm(dim=1, keepdim=True)).requires_grad_(True))
    b_dec = torch.zeros(L, d, requires_grad=True)
    opt = torch.optim.Adam([W_enc, b_enc, b_dec, *W_dec], lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        pre = torch.einsum("bld,ldn->bln", x, W_enc) + b_enc
        if activation == "topk":
            vals, idx = pre.topk(k, dim=2)
            acts = torch.zeros_like(pre).scatter(2, idx, torch.relu(vals))
        else:
            acts = torch.relu(pre)
        recon = b_dec.expand(batch, L, d).reshape(batch, L * d)
        for l in range(L):
            contrib = acts[:, l, :] @ W_dec[l]
            recon = recon + torch.nn.functional.pad(contrib, (l * d, 0))
        loss = ((recon - y.reshape(batch, L * d)) ** 2).sum(1).mean()
        if activation == "relu":
            loss = loss + 5.0 * sum((acts[:, l, :] * W_dec[l].norm(dim=1)).sum(1).mean() for l in range(L))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for w in W_dec:
                w.grad -= (w.grad * w).sum(1, keepdim=True) * w
        opt.step()
        with torch.no_grad():
            for w in W_dec:
                w.div_(w.norm(dim=1, keepdim=True))

    for i in range(warmup):
        step(x_all[i % 4], y_all[i % 4])
    t0 = time.perf_counter()
    for i in range(steps):
        step(x_all[i % 4], y_all[i % 4])
    return steps * batch / (time.perf_counter() - t0)


if __name__ == "__main__":
    torch.set_num_threads(2)
    blas = require_optimized_blas()
    layers, d, n, activation, k, batch, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
    print(json.dumps({"tokens_per_second": bench(layers, d, n, activation, k, batch, steps, 3), "torch": torch.__version__, "blas": blas}))
