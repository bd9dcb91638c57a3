"""A sparsify-style PyTorch TopK/BatchTopK SAE step for sdlkit's benchmark, written from sparsify's description: the
encoder is fused with the selection (pre-activations, top-k, ReLU) and its backward pass touches only the selected
columns (index_add into the weight gradient, embedding_bag for the input gradient); the decoder is an embedding_bag of
the selected decoder rows weighted by the activations. Same initialisation and optimiser as sae_torch.py (Adam,
unit-norm decoder rows with the parallel gradient removed), fp32, 2 threads. BatchTopK keeps the k x batch largest
pre-activations of the batch (variable per row): the same kernels on (row, latent) pairs. Prints tokens per second."""
import torch
import torch.nn.functional as F
from loop import main, sae_init, tokens_per_second, unit_norm_update


class FusedEncoder(torch.autograd.Function):
    """pre = x W_enc^T + b_enc, then the selection; gradients only through the selected (row, latent) pairs."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, k, batch_topk):
        pre = F.linear(x, W_enc, b_enc)
        if batch_topk:
            B = x.shape[0]
            vals, flat = pre.flatten().topk(k * B)
            rows, cols = flat // pre.shape[1], flat % pre.shape[1]
            vals = torch.relu(vals)
        else:
            vals, cols = pre.topk(k, dim=1)
            vals = torch.relu(vals)
            rows = None
        ctx.save_for_backward(x, W_enc, cols, vals, rows if rows is not None else torch.empty(0))
        ctx.batch_topk = batch_topk
        ctx.mark_non_differentiable(cols, *([rows] if rows is not None else []))
        return vals, cols, rows

    @staticmethod
    def backward(ctx, g_vals, _g_cols, _g_rows):
        x, W_enc, cols, vals, rows = ctx.saved_tensors
        g = g_vals * (vals > 0)
        if ctx.batch_topk:
            g_x = torch.zeros_like(x).index_add_(0, rows, g[:, None] * W_enc[cols])
            g_W = torch.zeros_like(W_enc).index_add_(0, cols, g[:, None] * x[rows])
        else:
            k = cols.shape[1]
            g_x = F.embedding_bag(cols, W_enc, per_sample_weights=g, mode="sum")
            g_W = torch.zeros_like(W_enc).index_add_(0, cols.flatten(), g.flatten()[:, None] * x.repeat_interleave(k, 0))
        g_b = torch.zeros(W_enc.shape[0], dtype=x.dtype).index_add_(0, cols.flatten(), g.flatten())
        return g_x, g_W, g_b, None, None


def bench(d_in: int, expansion: int, activation: str, k: int, batch: int, steps: int, warmup: int) -> float:
    batches, W_dec, b_enc, b_dec = sae_init(d_in, d_in * expansion, batch)
    W_enc = W_dec.detach().clone().requires_grad_(True)  # [d_sae, d_in]: W_enc = W_dec^T in SAELens orientation
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=1e-3)
    batch_topk = activation == "batchtopk"

    def step(x: torch.Tensor) -> None:
        vals, cols, rows = FusedEncoder.apply(x - b_dec, W_enc, b_enc, k, batch_topk)
        if batch_topk:
            recon = torch.zeros_like(x).index_add(0, rows, vals[:, None] * W_dec[cols]) + b_dec
        else:
            recon = F.embedding_bag(cols, W_dec, per_sample_weights=vals, mode="sum") + b_dec
        loss = ((recon - x) ** 2).sum(1).mean()
        unit_norm_update(opt, loss, [W_dec])

    return tokens_per_second(step, batches, batch, steps, warmup)


if __name__ == "__main__":
    main(bench, [int, int, str, int, int, int])
