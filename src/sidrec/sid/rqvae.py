"""RQ-VAE (LC-Rec / MiniOneRec): MLP encoder, residual VQ on the latent, MLP decoder.

Loss = MSE(decoder(quantised), x) + mean over levels of ||sg(r) - e||^2 + beta * ||r - sg(e)||^2 (beta = 0.25),
straight-through gradients, codebooks initialised by k-means on the initial latent residuals (the whole catalogue,
not only the first batch). `sk_epsilon > 0` turns on MiniOneRec's Sinkhorn-balanced assignment (training and
encoding): centred, scaled distances -> Sinkhorn soft plan -> argmax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sidrec.sid.base import SIDEstimator, sq_dists
from sidrec.sid.rqkmeans import kmeans


def _mlp(dims: Sequence[int], zero_last: bool = False):
    import torch.nn as nn

    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    if zero_last:  # residual branch starts as zero, so the block starts as the identity
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


def sinkhorn_argmax(d, eps: float, iters: int = 50):
    """MiniOneRec's balanced assignment: Sinkhorn on centred, scaled distances, then argmax of the plan."""
    import torch

    d = d - d.mean()
    d = d / (d.abs().max() + 1e-12)
    Q = torch.exp(-d / eps).T.double()  # (K, n)
    Q /= Q.sum()
    K, n = Q.shape
    for _ in range(iters):
        Q /= Q.sum(1, keepdim=True) * K
        Q /= Q.sum(0, keepdim=True) * n
    return Q.argmax(0)


class ResidualVQModel:
    """Encoder, residual codebooks and decoder as one torch module (built lazily so torch loads only when used)."""

    def __new__(cls, in_dim: int, hidden: Sequence[int], e_dim: int, levels: int, codebook: int,
                residual: bool = False, beta: float = 0.25):
        import torch
        import torch.nn as nn

        class _Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.residual, self.beta = residual, beta
                if residual:  # RQ-KMeans+: z = x + MLP(x), x_hat = q + MLP(q); both MLPs start at zero
                    self.enc = _mlp([in_dim, *hidden, in_dim], zero_last=True)
                    self.dec = _mlp([in_dim, *hidden, in_dim], zero_last=True)
                else:
                    self.enc = _mlp([in_dim, *hidden, e_dim])
                    self.dec = _mlp([e_dim, *reversed(hidden), in_dim])
                dim = in_dim if residual else e_dim
                self.codebooks = nn.Parameter(torch.zeros(levels, codebook, dim))

            def encode(self, x):
                return x + self.enc(x) if self.residual else self.enc(x)

            def decode(self, q):
                return q + self.dec(q) if self.residual else self.dec(q)

            def quantize(self, z, sk_eps: Sequence[float] = ()):
                r, q, vq, codes = z, 0.0, 0.0, []
                for level in range(self.codebooks.shape[0]):
                    C = self.codebooks[level]
                    d = (r.detach() ** 2).sum(1, keepdim=True) - 2 * r.detach() @ C.T + (C ** 2).sum(1)[None]
                    eps = sk_eps[level] if level < len(sk_eps) else 0.0
                    idx = sinkhorn_argmax(d.detach(), eps) if eps > 0 else d.argmin(1)
                    e = C[idx]
                    vq = vq + ((e - r.detach()) ** 2).mean() + self.beta * ((r - e.detach()) ** 2).mean()
                    q = q + r + (e - r).detach()  # straight-through: forward value e, gradient to the encoder
                    r = r - e.detach()
                    codes.append(idx)
                return q, vq / self.codebooks.shape[0], torch.stack(codes, 1)

            def forward(self, x, sk_eps: Sequence[float] = ()):
                q, vq, codes = self.quantize(self.encode(x), sk_eps)
                recon = ((self.decode(q) - x) ** 2).mean()
                return recon, vq, codes

        return _Model()


class TorchRQ(SIDEstimator):
    """Shared training loop and numpy bridge for the two learned methods."""

    residual = False

    def __init__(self, levels=3, codebook=256, seed=42, collision="reassign", hidden=(256, 128), e_dim=32,
                 epochs=500, lr=1e-3, beta=0.25, batch_size=4096, weight_decay=1e-4, sk_epsilon=0.0,
                 log_every=25, device="cpu"):
        super().__init__(levels, codebook, seed, collision)
        self.hidden, self.e_dim, self.epochs, self.lr, self.beta = tuple(hidden), e_dim, epochs, lr, beta
        self.batch_size, self.weight_decay, self.sk_epsilon = batch_size, weight_decay, sk_epsilon
        self.log_every, self.device = log_every, device

    def params(self) -> dict:
        return {**super().params(), "hidden": list(self.hidden), "e_dim": self.e_dim, "epochs": self.epochs,
                "lr": self.lr, "beta": self.beta, "batch_size": self.batch_size, "weight_decay": self.weight_decay,
                "sk_epsilon": self.sk_epsilon}

    def _init_codebooks(self, X: np.ndarray, model) -> np.ndarray:
        raise NotImplementedError

    def _sk(self) -> list[float]:
        # balanced assignment only where asked; MiniOneRec's default is off on every level
        return [float(self.sk_epsilon)] * self.levels if self.sk_epsilon else []

    def _fit(self, X: np.ndarray) -> None:
        import torch

        torch.manual_seed(self.seed)
        model = ResidualVQModel(X.shape[1], self.hidden, self.e_dim, self.levels, self.codebook,
                                residual=self.residual, beta=self.beta).to(self.device)
        xt = torch.from_numpy(X).to(self.device)
        with torch.no_grad():
            model.codebooks.copy_(torch.from_numpy(self._init_codebooks(X, model)))
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        self.history_ = []
        for epoch in range(self.epochs + 1):
            if epoch % self.log_every == 0 or epoch == self.epochs:
                model.eval()
                with torch.no_grad():
                    recon, vq, _ = model(xt, self._sk())
                self.history_.append({"epoch": epoch, "recon": float(recon), "vq": float(vq)})
                model.train()
            if epoch == self.epochs:
                break
            for batch in torch.randperm(len(X), generator=gen).split(self.batch_size):
                recon, vq, _ = model(xt[batch], self._sk())
                opt.zero_grad()
                (recon + vq).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
        model.eval()
        self.model_ = model
        self.codebooks_ = [C.detach().cpu().numpy().copy() for C in model.codebooks]

    def _latent(self, X: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model_.encode(torch.from_numpy(X).to(self.device)).cpu().numpy()

    def _assign(self, Z: np.ndarray) -> np.ndarray:
        if not self.sk_epsilon:
            return super()._assign(Z)
        import torch

        with torch.no_grad():
            return self.model_.quantize(torch.from_numpy(Z), self._sk())[2].numpy().astype(np.int64)

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            q = torch.from_numpy(self._quantized(codes)).to(self.device)
            return self.model_.decode(q).cpu().numpy()

    def save(self, folder) -> list[str]:
        from safetensors.torch import save_file

        from sidrec.io import atomic_path

        names = super().save(folder)
        with atomic_path(Path(folder) / "model.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}, str(tmp))
        return names + ["model.safetensors"]

    def load_state(self, folder) -> "TorchRQ":
        from safetensors.torch import load_file

        state = load_file(str(Path(folder) / "model.safetensors"))
        in_dim = int(state["enc.0.weight"].shape[1])
        model = ResidualVQModel(in_dim, self.hidden, self.e_dim, self.levels, self.codebook,
                                residual=self.residual, beta=self.beta)
        model.load_state_dict(state)
        self.model_ = model.to(self.device).eval()
        self.codebooks_ = [C.detach().cpu().numpy().copy() for C in model.codebooks]
        self.dim_ = in_dim
        return self


class RQVAE(TorchRQ):
    method = "rqvae"

    def _init_codebooks(self, X: np.ndarray, model) -> np.ndarray:
        import torch

        with torch.no_grad():
            R = model.encode(torch.from_numpy(X).to(self.device)).cpu().numpy()
        books = []
        for level in range(self.levels):
            C = kmeans(R, self.codebook, self.seed + level)
            R = R - C[sq_dists(R, C).argmin(1)]
            books.append(C)
        return np.stack(books)
