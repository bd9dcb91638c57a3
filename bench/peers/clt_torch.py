"""PyTorch reference cross-layer transcoder step for sdlkit's CLT benchmark: per-layer encoders (one batched
matmul), per-layer TopK (k per layer) or ReLU, each layer's decoder writing its own and every later layer's
output (dense matmuls, as PyTorch CLT trainers do), loss = mean over tokens of the summed squared error of every
layer's output, Adam, unit-norm decoder rows (each feature's concatenated writes) with the parallel gradient
removed. fp32, 2 threads. Prints tokens per second as JSON. Run with Debian's python3."""
import torch
from loop import main, tokens_per_second, unit_norm_update


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
        unit_norm_update(opt, loss, W_dec)

    return tokens_per_second(step, [(x_all[j], y_all[j]) for j in range(4)], batch, steps, warmup)


if __name__ == "__main__":
    main(bench, [int, int, int, str, int, int, int])
