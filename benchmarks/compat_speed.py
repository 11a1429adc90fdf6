"""acsleuth.compat.sleuth against a replay of the reference library's loop, at equal epochs.

Usage::

    PYTHONPATH=. python benchmarks/compat_speed.py                     # 5,000 + 5,000 cells x 2,000 genes
    PYTHONPATH=. python benchmarks/compat_speed.py --cells 1000 --epochs 1 1 5   # smoke run

The reference library (``sleuth``) is not installable here, so the baseline is a replay of
its documented training and scoring procedure, written for this benchmark (acsleuth's own
networks, so that only the procedure differs):

- minibatches from a ``torch.utils.data.DataLoader`` over the dense matrix (batch 128,
  shuffled, ``drop_last=True``, ``--workers`` worker processes and pinned memory as shipped;
  ``--workers 0`` for the variant without them);
- every critic update re-runs the generator with gradients (``n_critic + 1`` generator
  forward passes per step), the memory bank's attention is the unfused PyTorch one;
- the scorer takes ``score_epochs`` full-batch steps on the dense ``N x N`` linear-kernel
  loss with the reference library's weight (``acsleuth.ops._reference``).

Both sides get the same log-normalised data (``acsleuth.datasets.synthetic``, 10 %
anomalies of two planted types), the same epochs and seed, and ``--threads`` threads; the
table reports wall seconds of train + score, their ratio, and AUROC/AP/F1 from
``acsleuth.compat.sleuth.evaluate``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scanpy as sc
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from acsleuth.compat.sleuth import AnomalyModel, evaluate
from acsleuth.compat.sleuth.configs import AnomalyConfigs
from acsleuth.datasets import synthetic
from acsleuth.nn import Critic, Decoder, Encoder, Predictor
from acsleuth.ops import _reference
from acsleuth.train.adversarial import gradient_penalty


class ReplayGenerator(nn.Module):
    """Encoder, unfused memory attention over a ring-buffer queue, decoder."""

    def __init__(self, n_genes: int, n_memory: int = 512, dim: int = 256) -> None:
        super().__init__()
        self.encoder, self.decoder = Encoder(n_genes), Decoder(n_genes)
        self.register_buffer("queue", torch.empty(n_memory, dim).uniform_(-(dim**-0.5), dim**-0.5))
        self.position = 0

    def forward(self, x: torch.Tensor, use_memory: bool) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        read = _reference.memory_attention(z, self.queue, 0.05, 0.01) if use_memory else z
        return self.decoder(read), z

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        rows = (self.position + torch.arange(z.shape[0])) % self.queue.shape[0]
        self.queue[rows] = z
        self.position = int(rows[-1] + 1) % self.queue.shape[0]


def replay(
    ref: np.ndarray, tgt: np.ndarray, epochs: tuple[int, int, int], workers: int, seed: int
) -> np.ndarray:
    """Train as the reference library does and return its anomaly probabilities of ``tgt``."""
    torch.manual_seed(seed)
    prepare_epochs, train_epochs, score_epochs = epochs
    g, d = ReplayGenerator(ref.shape[1]), Critic(ref.shape[1])
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.5, 0.999))
    sched = [
        torch.optim.lr_scheduler.CosineAnnealingLR(o, max(train_epochs, 1)) for o in (opt_g, opt_d)
    ]
    loader = DataLoader(
        torch.from_numpy(ref),
        batch_size=128,
        shuffle=True,
        num_workers=workers,
        pin_memory=workers > 0,
        drop_last=True,
    )
    for use_memory, n_epochs in ((False, prepare_epochs), (True, train_epochs)):
        for _ in range(n_epochs):
            for x in loader:
                for _ in range(2):  # n_critic: the generator runs again for every critic update
                    fake, _ = g(x, use_memory)
                    loss_d = (
                        d(fake.detach()).mean()
                        - d(x).mean()
                        + 10 * gradient_penalty(d, x, fake.detach())
                    )
                    opt_d.zero_grad()
                    loss_d.backward()
                    opt_d.step()
                fake, z = g(x, use_memory)
                loss_g = 30 * F.l1_loss(fake, x) - d(fake).mean()
                opt_g.zero_grad()
                loss_g.backward()
                opt_g.step()
                if use_memory:
                    g.enqueue(z.detach())
            if use_memory:
                for s in sched:
                    s.step()
    g.eval()
    x = torch.from_numpy(tgt)
    with torch.no_grad():
        delta = x - torch.cat(
            [g(b, True)[0] for b in DataLoader(x, batch_size=128, num_workers=workers)]
        )
    scorer = Predictor(tgt.shape[1])
    opt_s = torch.optim.Adam(scorer.parameters(), lr=1e-4, betas=(0.5, 0.999))
    sched_s = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, max(score_epochs, 1))
    for _ in range(score_epochs):  # one full-batch step per epoch, dense N x N kernel
        p = torch.sigmoid(scorer(delta))
        n = p.sum()
        loss = _reference.gamma_mmd_loss(
            delta, p, len(p) - n, n, kernel="linear", gamma="reference"
        )
        opt_s.zero_grad()
        loss.backward()
        opt_s.step()
        sched_s.step()
    scorer.eval()
    with torch.no_grad():
        return torch.sigmoid(scorer(delta)).double().numpy()


def log_normalised(adata) -> np.ndarray:
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return np.asarray(adata.X.toarray(), dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cells", type=int, default=5000, help="reference cells (and target cells)"
    )
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument(
        "--epochs", type=int, nargs=3, default=(5, 5, 20), metavar=("PREPARE", "TRAIN", "SCORE")
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="the replay's DataLoader workers (shipped: 4)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref_ad, tgt_ad = synthetic(args.cells, args.cells, args.genes, seed=0)
    label = tgt_ad.obs["is_anomaly"].to_numpy().astype(int)
    ref, tgt = log_normalised(ref_ad.copy()), log_normalised(tgt_ad.copy())
    ref_ad.X, tgt_ad.X = ref, tgt

    rows = []
    start = time.perf_counter()
    configs = AnomalyConfigs(args.genes)
    configs.prepare_epochs, configs.train_epochs, configs.score_epochs = args.epochs
    configs.random_state, configs.device = args.seed, torch.device("cpu")
    model = AnomalyModel(configs)
    model.detect(ref_ad)
    ours = model.predict(tgt_ad)
    rows.append(("acsleuth.compat.sleuth", time.perf_counter() - start, evaluate(label, ours)))
    for workers in sorted({args.workers, 0}, reverse=True):
        start = time.perf_counter()
        theirs = replay(ref, tgt, tuple(args.epochs), workers, args.seed)
        rows.append(
            (
                f"replay, {workers} DataLoader workers",
                time.perf_counter() - start,
                evaluate(label, theirs),
            )
        )
    print(
        f"\n{args.cells} reference + {args.cells} target cells x {args.genes} genes, epochs "
        f"{tuple(args.epochs)}, {args.threads} threads, torch {torch.__version__}"
    )
    print("| run | seconds | speed-up of acsleuth | AUROC | AP | F1 |\n|---|---|---|---|---|---|")
    for name, seconds, (auroc, ap, f1) in rows:
        print(
            f"| {name} | {seconds:.1f} | {seconds / rows[0][1]:.2f}x | {auroc:.3f} | {ap:.3f} | {f1:.3f} |"
        )


if __name__ == "__main__":
    main()
