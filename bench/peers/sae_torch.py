"""PyTorch reference SAE trainer for sdlkit's benchmark (the algorithm SAELens / dictionary_learning / sparsify
implement): Adam, unit-norm decoder rows with the parallel gradient removed, TopK, BatchTopK or ReLU + decoder-norm-weighted L1,
fp32, the same batch. Prints tokens per second as JSON. Run with Debian's python3 and torch.set_num_threads(2)."""
import torch
from loop import main, sae_init, tokens_per_second, unit_norm_update


def bench(d_in: int, expansion: int, activation: str, k: int, batch: int, steps: int, warmup: int) -> float:
    batches, W_dec, b_enc, b_dec = sae_init(d_in, d_in * expansion, batch)
    W_enc = W_dec.detach().t().clone().requires_grad_(True)
    params = [W_enc, b_enc, W_dec, b_dec]
    opt = torch.optim.Adam(params, lr=1e-3)

    def step(x: torch.Tensor) -> None:
        pre = (x - b_dec) @ W_enc + b_enc
        if activation == "topk":
            vals, idx = pre.topk(k, dim=1)
            acts = torch.zeros_like(pre).scatter(1, idx, torch.relu(vals))
            loss = ((acts @ W_dec + b_dec - x) ** 2).sum(1).mean()
        elif activation == "batchtopk":
            vals, idx = pre.flatten().topk(k * x.shape[0])
            acts = torch.zeros_like(pre).flatten().scatter(0, idx, torch.relu(vals)).view_as(pre)
            loss = ((acts @ W_dec + b_dec - x) ** 2).sum(1).mean()
        else:
            acts = torch.relu(pre)
            loss = ((acts @ W_dec + b_dec - x) ** 2).sum(1).mean() + 5.0 * (acts * W_dec.norm(dim=1)).sum(1).mean()
        unit_norm_update(opt, loss, [W_dec])

    return tokens_per_second(step, batches, batch, steps, warmup)


if __name__ == "__main__":
    main(bench, [int, int, str, int, int, int])
