"""The open-world annotator's network (docs/method.md §8.2): a denoising autoencoder with two heads.

The backbone encodes ``G -> 512 -> 256 -> 128``; the decoder mirrors it and a mask head
estimates which genes the augmentation masked. On the 128-d embedding ``z`` sit a prototype
head (``128 -> 128``, cosine to K learnable prototypes) and a projection head (2 x 128) whose
L2-normalised output feeds the contrastive losses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .blocks import dense_block

WIDTHS = (512, 256, 128)


class AnnotatorOutput(NamedTuple):
    """What one forward pass gives: embedding, reconstruction, mask logits, cosines, projection."""

    z: Tensor
    recon: Tensor
    mask_logits: Tensor
    cosine: Tensor
    projection: Tensor


class AnnotatorNet(nn.Module):
    """``(B, G)`` log-expression -> :class:`AnnotatorOutput` with ``n_classes`` prototypes."""

    def __init__(self, n_genes: int, n_classes: int) -> None:
        super().__init__()
        hidden, middle, latent = WIDTHS
        self.encoder = nn.Sequential(
            dense_block(n_genes, hidden), dense_block(hidden, middle), nn.Linear(middle, latent)
        )
        self.decoder = nn.Sequential(
            dense_block(latent, middle), dense_block(middle, hidden), nn.Linear(hidden, n_genes)
        )
        self.mask_head = nn.Linear(hidden, n_genes)
        self.classifier = nn.Sequential(
            nn.Linear(latent, latent), nn.ReLU(), nn.Linear(latent, latent)
        )
        self.prototypes = nn.Parameter(torch.randn(n_classes, latent) / latent**0.5)
        self.projection = nn.Sequential(
            nn.Linear(latent, latent), nn.ReLU(), nn.Linear(latent, latent)
        )

    @property
    def n_classes(self) -> int:
        return self.prototypes.shape[0]

    def embed(self, x: Tensor) -> Tensor:
        """The 128-d embedding ``z``."""
        return self.encoder(x)

    def feature(self, z: Tensor) -> Tensor:
        """The L2-normalised classifier feature ``h``."""
        return F.normalize(self.classifier(z), dim=1)

    def cosine(self, z: Tensor) -> Tensor:
        """``(B, K)`` cosine similarity of the classifier feature ``h`` to every prototype."""
        return self.feature(z) @ F.normalize(self.prototypes, dim=1).T

    def forward(self, x: Tensor) -> AnnotatorOutput:
        z = self.encoder(x)
        hidden = self.decoder[:-1](z)
        return AnnotatorOutput(
            z=z,
            recon=self.decoder[-1](hidden),
            mask_logits=self.mask_head(hidden),
            cosine=self.cosine(z),
            projection=F.normalize(self.projection(z), dim=1),
        )
