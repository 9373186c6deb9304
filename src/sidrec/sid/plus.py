"""RQ-KMeans+ (GPR; MiniOneRec's first open reproduction): constrained RQ-KMeans refined by a residual encoder.

Codebooks start at the constrained RQ-KMeans centroids; the encoder is z = x + MLP(x) with the MLP's last layer
zero-initialised, so training starts exactly at the balanced k-means solution and moves only as far as the
reconstruction + commitment losses pay for. Quantisation happens in the input space (latent dim = input dim).

Departure from MiniOneRec: our decoder is residual too (x_hat = q + MLP(q), zero-init), so the starting
reconstruction is the k-means one instead of a random decoder's; training can then only refine it.
Encoding is balanced by default (see `_assign`).
"""

from __future__ import annotations

import numpy as np

from sidrec.sid.base import sq_dists
from sidrec.sid.constrained import ConstrainedRQKMeans, balanced_assign, load_prices, save_prices
from sidrec.sid.rqvae import TorchRQ


class RQKMeansPlus(TorchRQ):
    method = "rqkmeans-plus"
    residual = True

    def __init__(self, levels=3, codebook=256, seed=42, collision="reassign", hidden=(512,), epochs=200, lr=1e-4,
                 beta=0.25, batch_size=4096, weight_decay=0.0, sk_epsilon=0.0, log_every=25, device="cpu",
                 balance_iters=10, balanced=True):
        super().__init__(levels, codebook, seed, collision, hidden=hidden, e_dim=0, epochs=epochs, lr=lr, beta=beta,
                         batch_size=batch_size, weight_decay=weight_decay, sk_epsilon=sk_epsilon,
                         log_every=log_every, device=device)
        self.balance_iters, self.balanced = balance_iters, balanced

    def params(self) -> dict:
        p = {**super().params(), "balance_iters": self.balance_iters, "balanced": self.balanced}
        p.pop("e_dim")
        return p

    def _init_codebooks(self, X: np.ndarray, model) -> np.ndarray:
        warm = ConstrainedRQKMeans(self.levels, self.codebook, self.seed, iters=self.balance_iters)
        warm._fit(X)
        self.warm_start_ = warm
        return np.stack(warm.codebooks_)

    def _assign(self, Z: np.ndarray) -> np.ndarray:
        """Balanced codes (as constrained RQ-KMeans, prices warm-started from it) unless `balanced=False`.

        Training uses nearest-code assignment (straight-through); without the balanced step at encode time the
        deeper levels drift to entropies around 0.90-0.95 on Industrial, which is what the warm start was to avoid.
        `assign` (new items) takes the nearest code instead, the rule training used: a few new items are not a
        catalogue to balance.
        """
        if not self.balanced or len(Z) < self.codebook:
            return super()._assign(Z)
        codes = np.empty((len(Z), self.levels), dtype=np.int64)
        R = Z.astype(np.float32, copy=True)
        for level, C in enumerate(self.codebooks_):
            codes[:, level] = balanced_assign(sq_dists(R, C), prices=self.warm_start_.prices_[level])[0]
            R -= C[codes[:, level]]
        return codes

    def save(self, folder) -> list[str]:
        # the warm-start prices: `encode` balances with them, so a loaded model encodes the catalogue as built
        return super().save(folder) + save_prices(folder, self.warm_start_.prices_)

    def load_state(self, folder) -> "RQKMeansPlus":
        super().load_state(folder)
        self.warm_start_ = ConstrainedRQKMeans(self.levels, self.codebook, self.seed, iters=self.balance_iters)
        self.warm_start_.prices_ = load_prices(folder, self.levels)
        return self
