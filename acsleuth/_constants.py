"""ACsleuth's defaults and option literals, in one home, and :class:`Params`, its settings.

The numbers are the method's defaults (docs/method.md §1-§4): every stage config and the
:class:`~acsleuth.ACsleuth` signature take them from here instead of restating them.
:class:`Params` holds one model's settings, checks them when built, and derives each
stage's config from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from .stages.detect import DetectorConfig
    from .stages.kin import KinConfig
    from .stages.mmd import ScorerConfig
    from .stages.neighbours import NeighbourConfig
    from .stages.style import StyleConfig
    from .stages.subtype import SubtypeConfig

# ------------------------------------------------------------------ option literals
Score = Literal["ensemble", "mmd", "knn", "scaled", "residual", "cosine", "critic"]
SCORES: tuple[Score, ...] = ("ensemble", "mmd", "knn", "scaled", "residual", "cosine", "critic")
SCORE = "mmd"  # the default: chosen on the issue-16 development scenarios
NEEDS_MMD: tuple[Score, ...] = ("ensemble", "mmd")  # scores that train the MMD predictor
WarmRanking = Literal["knn", "scaled"]
WARM_RANKINGS: tuple[WarmRanking, ...] = ("knn", "scaled")
Kernel = Literal["linear", "gaussian"]
KERNELS: tuple[Kernel, ...] = ("linear", "gaussian")
Gamma = Literal["interp", "reference"]
GAMMAS: tuple[Gamma, ...] = ("interp", "reference")
Kin = Literal["nearest", "learned"]
KINS: tuple[Kin, ...] = ("nearest", "learned")
Metric = Literal["cosine", "dot"]
AnomalyExpression = Literal["shift", "generator"]
ANOMALY_EXPRESSIONS: tuple[AnomalyExpression, ...] = ("shift", "generator")
SubtypeEmbedding = Literal["pca", "fusion"]
SUBTYPE_EMBEDDINGS: tuple[SubtypeEmbedding, ...] = ("pca", "fusion")
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16")

# ------------------------------------------------------------------ defaults
LEARNING_RATE = 1e-4
BETAS = (0.5, 0.999)  # Adam's, in every adversarial stage and the MMD predictor
RECONSTRUCTION_WEIGHT = 30.0  # alpha
ADVERSARIAL_WEIGHT = 1.0  # beta
GP_WEIGHT = 10.0  # lambda
N_CRITIC = 2  # critic updates per generator update, module I
STYLE_N_CRITIC = 3  # and module III
N_MEMORY = 512
MEMORY_TEMPERATURE = 0.05
MEMORY_SHRINK = 0.01
BATCH_SIZE = 128
EVAL_BATCH_SIZE = 4096
N_NEIGHBOURS = 10  # k of the "knn" score: more than 5 ranked mixtures of types better (dev set)
N_REFERENCE_PCS = 50  # principal components of the reference the "knn" score measures in
# null quantiles at which calls without a ratio count normal cells (stages.neighbours)
COUNT_QUANTILES = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
# null quantiles over which each batch's null is lifted until the count is flat (stages.neighbours)
LIFT_QUANTILES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
SEED = 2024
# "auto": module I and the MMD predictor train under bf16 autocast on a CPU with bf16 matrix
# units (AMX or AVX512-BF16), everything else runs float32 (acsleuth._precision,
# Params.untrained_precision); benchmarks/RESULTS.md, issue 21
PRECISION: Precision = "auto"
KEY_ADDED = "acsleuth"
# the values of OpenWorldConfig.seen_labels: who names a cell the open-world annotator calls seen
SEEN_LABELS = ("linear", "scdet")
# the epochs that ``--epochs`` (and ``run_demo(epochs=...)``) set, in order
EPOCH_PARAMS = ("prepare_epochs", "train_epochs", "score_epochs", "style_epochs", "subtype_epochs")


@dataclass(frozen=True)
class Params:
    """The settings of one :class:`~acsleuth.ACsleuth` (its constructor's arguments).

    Built (and :func:`dataclasses.replace`-d) only with valid values: a bad one is a
    ``ValueError`` naming the setting and what it takes. The ``*_config`` methods derive each
    stage's config from these settings.
    """

    n_top_genes: int = 3000
    prepare_epochs: int = 50
    train_epochs: int = 20
    score_epochs: int = 5
    batch_size: int = BATCH_SIZE
    score: Score = SCORE
    kernel: Kernel = "gaussian"
    gamma: Gamma = "interp"
    anomaly_ratio: float | None = None
    score_batch_size: int | None = BATCH_SIZE
    warm_epochs: int = 10
    warm_ranking: WarmRanking = "knn"
    anchor: bool = True
    batch_scale: bool = True
    n_memory: int = N_MEMORY
    memory_temperature: float = MEMORY_TEMPERATURE
    memory_shrink: float = MEMORY_SHRINK
    n_critic: int = N_CRITIC
    style_n_critic: int = STYLE_N_CRITIC
    reconstruction_weight: float = RECONSTRUCTION_WEIGHT
    adversarial_weight: float = ADVERSARIAL_WEIGHT
    gp_weight: float = GP_WEIGHT
    learning_rate: float = LEARNING_RATE
    eval_batch_size: int = EVAL_BATCH_SIZE
    kin_epochs: int = 20
    style_epochs: int = 50
    subtype_epochs: int = 100
    subtype_embedding: SubtypeEmbedding = "pca"
    cache_gb: float | None = None
    precision: Precision = PRECISION
    device: str = "auto"
    random_state: int = SEED
    verbose: bool = True
    n_jobs: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "n_top_genes",
            "batch_size",
            "n_memory",
            "eval_batch_size",
            "n_critic",
            "style_n_critic",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"ACsleuth: {name} must be a positive integer, got {getattr(self, name)}"
                )
        for name in (
            "prepare_epochs",
            "train_epochs",
            "score_epochs",
            "warm_epochs",
            "kin_epochs",
            "style_epochs",
            "subtype_epochs",
        ):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"ACsleuth: {name} must be >= 0, got {getattr(self, name)}")
        check_option("score", self.score, SCORES)
        check_option("warm_ranking", self.warm_ranking, WARM_RANKINGS)
        if self.kernel not in KERNELS:
            raise ValueError(
                f"ACsleuth: kernel must be 'linear' or 'gaussian', got {self.kernel!r}"
            )
        if self.gamma not in GAMMAS:
            raise ValueError(f"ACsleuth: gamma must be 'interp' or 'reference', got {self.gamma!r}")
        check_anomaly_ratio(self.anomaly_ratio)
        if self.subtype_embedding not in SUBTYPE_EMBEDDINGS:
            raise ValueError(
                f"ACsleuth: subtype_embedding must be 'pca' or 'fusion', got {self.subtype_embedding!r}"
            )
        if self.cache_gb is not None and not float(self.cache_gb) >= 0:
            raise ValueError(
                f"ACsleuth: cache_gb must be >= 0 or None (automatic), got {self.cache_gb}"
            )
        check_option("precision", self.precision, PRECISIONS)
        check_n_jobs(self.n_jobs)
        for name in ("learning_rate", "memory_temperature"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"ACsleuth: {name} must be > 0, got {getattr(self, name)}")
        for name in ("memory_shrink", "reconstruction_weight", "adversarial_weight", "gp_weight"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"ACsleuth: {name} must be >= 0, got {getattr(self, name)}")

    # ------------------------------------------------------------------ stage configs
    def detector_config(self) -> DetectorConfig:
        """Module I (docs/method.md §1)."""
        from .stages.detect import DetectorConfig

        return DetectorConfig(
            prepare_epochs=self.prepare_epochs,
            train_epochs=self.train_epochs,
            lr=self.learning_rate,
            critic_steps=self.n_critic,
            reconstruction_weight=self.reconstruction_weight,
            adversarial_weight=self.adversarial_weight,
            gp_weight=self.gp_weight,
            precision=self.precision,
        )

    def generator_settings(self) -> dict[str, float]:
        """The memory bank's keyword arguments of :class:`~acsleuth.nn.Generator`."""
        return {
            "n_memory": self.n_memory,
            "temperature": self.memory_temperature,
            "shrink": self.memory_shrink,
        }

    def scorer_config(self) -> ScorerConfig:
        """The MMD predictor (docs/method.md §1.1)."""
        from .stages.mmd import ScorerConfig

        return ScorerConfig(
            epochs=self.score_epochs,
            kernel=self.kernel,
            gamma=self.gamma,
            batch_size=self.score_batch_size,
            warm_epochs=self.warm_epochs,
            lr=self.learning_rate,
            precision=self.precision,
        )

    def neighbour_config(self) -> NeighbourConfig:
        """The reference index of the ``"knn"`` score and of the calls without a ratio."""
        from .stages.neighbours import NeighbourConfig

        return NeighbourConfig(n_components=N_REFERENCE_PCS, k=N_NEIGHBOURS)

    def kin_config(self) -> KinConfig:
        """The learned kin mapping (module II, docs/method.md §2)."""
        from .stages.kin import KinConfig

        return KinConfig(epochs=self.kin_epochs)

    def style_config(self, world_size: int = 1) -> StyleConfig:
        """The style transfer (module III, docs/method.md §3); each of ``world_size`` ranks
        takes its share of every minibatch."""
        from .stages.style import StyleConfig

        return StyleConfig(
            epochs=self.style_epochs,
            batch_size=max(2, self.batch_size // world_size),
            lr=self.learning_rate,
            critic_steps=self.style_n_critic,
            reconstruction_weight=self.reconstruction_weight,
            adversarial_weight=self.adversarial_weight,
            gp_weight=self.gp_weight,
            precision=self.untrained_precision(),
        )

    def untrained_precision(self) -> Precision:
        """``precision`` everywhere but the training of module I and of the MMD predictor
        (reconstruction, scores, embeddings, style transfer): ``"auto"`` is float32 there, so
        that scores keep float32 resolution and streamed, sharded and in-memory runs agree."""
        return "fp32" if self.precision == "auto" else self.precision

    def subtype_config(self) -> SubtypeConfig:
        """DESC (module IV, docs/method.md §4)."""
        from .stages.subtype import SubtypeConfig

        return SubtypeConfig(
            embedding=self.subtype_embedding,
            epochs=self.subtype_epochs,
            eval_batch_size=self.eval_batch_size,
        )


def check_option(name: str, value: object, choices: tuple[str, ...]) -> None:
    """A ``ValueError`` naming ``name`` and its ``choices`` unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"ACsleuth: {name} must be one of {choices}, got {value!r}")


def check_anomaly_ratio(ratio: object) -> None:
    """``None`` or a number in ``(0, 1)``; anything else is a ``ValueError`` saying so."""
    number = isinstance(ratio, int | float | np.integer | np.floating)
    if ratio is not None and not (number and 0.0 < float(ratio) < 1.0):
        raise ValueError(
            f"ACsleuth: anomaly_ratio must be in (0, 1) or None (estimate), got {ratio} "
            "(pass the expected fraction of anomalous cells, e.g. 0.1, or leave it out)"
        )


def check_n_jobs(n_jobs: object) -> None:
    """``None`` (automatic), -1 (every usable core) or a positive number of CPU threads."""
    if n_jobs is not None and (
        isinstance(n_jobs, bool)
        or not isinstance(n_jobs, int | np.integer)
        or n_jobs == 0
        or n_jobs < -1
    ):
        raise ValueError(
            f"ACsleuth: n_jobs must be a positive number of threads, -1 (every usable core) or "
            f"None (automatic), got {n_jobs!r}"
        )


DEFAULTS = Params()  # the defaults of every setting, e.g. for a signature

__all__ = [
    "ANOMALY_EXPRESSIONS",
    "COUNT_QUANTILES",
    "DEFAULTS",
    "EPOCH_PARAMS",
    "GAMMAS",
    "KERNELS",
    "KINS",
    "LIFT_QUANTILES",
    "NEEDS_MMD",
    "N_NEIGHBOURS",
    "N_REFERENCE_PCS",
    "PRECISION",
    "PRECISIONS",
    "SCORE",
    "SCORES",
    "SUBTYPE_EMBEDDINGS",
    "WARM_RANKINGS",
    "AnomalyExpression",
    "Gamma",
    "Kernel",
    "Kin",
    "Metric",
    "Params",
    "Precision",
    "Score",
    "SubtypeEmbedding",
    "WarmRanking",
    "check_anomaly_ratio",
    "check_n_jobs",
    "check_option",
]
