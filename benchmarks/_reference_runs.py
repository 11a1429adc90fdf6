"""One timed run of one side of ``vs_reference.py``, in its own process.

``python benchmarks/_reference_runs.py SPEC_JSON`` reads the data file the parent wrote, runs
one side (``reference``: the reference library ``sleuth``; ``compat``:
``acsleuth.compat.sleuth``; ``acsleuth``: :class:`acsleuth.ACsleuth`) through detection or
the whole two-batch pipeline, and prints one JSON line: per stage its seconds and the process's
peak resident memory after it, and the quality (AUROC, AP, F1 of the detection; ARI of the
subtypes against the planted types).
"""

from __future__ import annotations

import json
import random
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scanpy  # noqa: F401  acsleuth imports it on first use (0.5 s): imported untimed, for every side
import torch
import torch._dynamo  # torch.optim imports it on first use: imported untimed, for every side
from anndata import AnnData
from sklearn.metrics import adjusted_rand_score
from torch.profiler import ProfilerActivity, profile

from acsleuth.compat.sleuth import evaluate


def peak_gb() -> float:
    """The peak resident memory of this process so far, in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load(path: str) -> tuple[AnnData, AnnData]:
    """The reference and target the parent wrote (dense log-normalised ``X``)."""
    data = np.load(path, allow_pickle=False)
    genes = [f"g{i}" for i in range(data["ref"].shape[1])]
    ref = AnnData(data["ref"])
    tgt = AnnData(data["tgt"])
    ref.var_names = tgt.var_names = genes
    tgt.obs["is_anomaly"] = data["is_anomaly"]
    tgt.obs["cell_type"] = data["cell_type"]
    tgt.obs["batch"] = data["batch"]
    tgt.obs["batch"] = tgt.obs["batch"].astype("category")
    return ref, tgt


def seed_all(seed: int) -> None:
    """What the reference library leaves undone: seed before its networks are built."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the reference and sklearn read the global state)
    torch.manual_seed(seed)


class Timer:
    """Seconds and peak memory per stage, in the order the stages ran; with ``flops``, each
    stage runs under ``torch.profiler`` instead and records the GFLOP of its matrix products
    (the profiler's count; its overhead makes those runs' seconds meaningless)."""

    def __init__(self, flops: bool = False) -> None:
        self.flops = flops
        self.stages: dict[str, dict[str, float]] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.flops:
            activities = [ProfilerActivity.CPU]
            if torch.cuda.is_initialized():
                activities.append(ProfilerActivity.CUDA)
            with profile(activities=activities, with_flops=True) as prof:
                out = fn()
            counted = sum(e.flops for e in prof.key_averages() if e.flops)
            self.stages[name] = {"gflop": counted / 1e9, "peak_gb": peak_gb()}
            return out
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()  # a stage's queued kernels count as its time
        self.stages[name] = {"seconds": time.perf_counter() - start, "peak_gb": peak_gb()}
        return out


def subtype_ari(labels: np.ndarray, tgt: AnnData, anomalous: np.ndarray) -> float:
    return float(adjusted_rand_score(tgt.obs["cell_type"].to_numpy()[anomalous], labels))


def import_reference(path: str, workers: int) -> Any:
    """``sleuth`` from ``path``; with ``workers == 0`` its DataLoaders run in-process."""
    sys.path.insert(0, path)
    from types import SimpleNamespace

    import sleuth.adapt
    import sleuth.anomaly
    import sleuth.configs
    import sleuth.subtype
    from torch.utils.data import DataLoader

    if workers == 0:

        def in_process(*args: Any, **kwargs: Any) -> DataLoader:
            kwargs.update(num_workers=0, pin_memory=False)
            return DataLoader(*args, **kwargs)

        sleuth.anomaly.DataLoader = sleuth.adapt.DataLoader = in_process
    return SimpleNamespace(
        AnomalyModel=sleuth.anomaly.AnomalyModel,
        AdaptModel=sleuth.adapt.AdaptModel,
        SubtypeModel=sleuth.subtype.SubtypeModel,
        AnomalyConfigs=sleuth.configs.AnomalyConfigs,
        AdaptConfigs=sleuth.configs.AdaptConfigs,
        SubtypeConfigs=sleuth.configs.SubtypeConfigs,
    )


class OutputOnly(torch.nn.Module):
    """The reference generator returning ``x_hat`` only (its ``AdaptModel._map`` needs it)."""

    def __init__(self, generator: torch.nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)[0]


def set_epochs(configs: Any, spec: dict[str, Any]) -> None:
    configs.prepare_epochs, configs.train_epochs, configs.score_epochs = spec["epochs"]
    configs.random_state, configs.device = spec["seed"], torch.device(spec["device"])


def same_threads(model: Any, spec: dict[str, Any]) -> None:
    """Give a compat model the reference's thread count (it would take every core)."""
    if spec["side"] == "compat" and not hasattr(model, "num_types"):
        settings = model.engine.params if hasattr(model, "engine") else model._settings
        settings["n_jobs"] = spec["threads"]


def run_library(spec: dict[str, Any], ref: AnnData, tgt: AnnData, timer: Timer) -> dict:
    """The reference library or acsleuth.compat.sleuth, through the same calls."""
    if spec["side"] == "reference":
        lib = import_reference(spec["reference_lib"], spec["workers"])
        n_styles = 1  # its style block never receives the batch: more than one fails
    else:
        import acsleuth.compat.sleuth as lib

        n_styles = int(tgt.obs["batch"].nunique())
    label = tgt.obs["is_anomaly"].to_numpy().astype(int)
    configs = lib.AnomalyConfigs(ref.n_vars)
    set_epochs(configs, spec)

    def build(make: Callable[[], Any]) -> Any:  # seeded, with the same threads
        seed_all(spec["seed"])
        model = make()
        same_threads(model, spec)
        return model

    def detect() -> Any:
        model = build(lambda: lib.AnomalyModel(configs))
        model.detect(ref)
        return model

    model = timer("detect", detect)
    out: dict[str, Any] = {}
    scores = timer("predict", lambda: model.predict(tgt))
    out["auroc"], out["ap"], out["f1"] = map(float, evaluate(label, scores))
    if spec["task"] != "pipeline":
        return out
    adapt_configs = lib.AdaptConfigs(ref.n_vars)
    adapt_configs.n_epochs, adapt_configs.random_state = spec["adapt_epochs"], spec["seed"]
    adapt_configs.device = torch.device(spec["device"])
    reference = spec["side"] == "reference"
    generator = OutputOnly(model.G) if reference else model.G
    corrected = timer(
        "adapt",
        lambda: build(lambda: lib.AdaptModel(adapt_configs, n_styles)).adapt(
            ref, tgt.copy() if reference else tgt, "batch", generator
        ),
    )
    anomalous = label.astype(bool)
    sub_configs = lib.SubtypeConfigs(ref.n_vars)
    sub_configs.n_epochs, sub_configs.random_state = spec["subtype_epochs"], spec["seed"]
    sub_configs.device = torch.device(spec["device"])
    q = timer(
        "subtype",
        lambda: build(lambda: lib.SubtypeModel(sub_configs, model.G, spec["n_types"])).fit(
            corrected[anomalous].copy()
        ),
    )
    out["ari"] = subtype_ari(q.argmax(1).cpu().numpy(), tgt, anomalous)
    return out


def run_acsleuth(spec: dict[str, Any], ref: AnnData, tgt: AnnData, timer: Timer) -> dict:
    """:class:`acsleuth.ACsleuth` at the same epochs (its default score and subtyping)."""
    from acsleuth import ACsleuth

    prepare, train, score = spec["epochs"]
    model = ACsleuth(
        n_top_genes=ref.n_vars,
        prepare_epochs=prepare,
        train_epochs=train,
        score_epochs=score,
        style_epochs=spec["adapt_epochs"],
        subtype_epochs=spec["subtype_epochs"],
        random_state=spec["seed"],
        device=spec["device"],
        verbose=False,
        n_jobs=spec["threads"],
    )
    label = tgt.obs["is_anomaly"].to_numpy().astype(int)
    timer("detect", lambda: model.fit(ref))  # builds its networks: the libraries' too
    pipeline = spec["task"] == "pipeline"
    batch_key = "batch" if pipeline else None
    result = timer("predict", lambda: model.evaluate(tgt, batch_key=batch_key))
    out = dict(zip(("auroc", "ap", "f1"), map(float, evaluate(label, result.score)), strict=True))
    out["own timings"] = {k: round(v, 2) for k, v in {**model.timings_, **result.timings}.items()}
    if not pipeline:
        return out
    x = timer(  # the batch scale scoring estimated, passed on as ``run`` does
        "adapt",
        lambda: model.correct(
            tgt, ref, normal=~result.anomaly, batch_key=batch_key, batch_scale=result.batch_scale
        ),
    )
    anomalous = label.astype(bool)
    sub = timer("subtype", lambda: model.subtype(x[anomalous], n_subtypes=spec["n_types"]))
    out["ari"] = subtype_ari(sub.labels, tgt, anomalous)
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    ref, tgt = load(spec["data"])
    timer = Timer(flops=spec.get("flops", False))
    runner = run_acsleuth if spec["side"] == "acsleuth" else run_library
    quality = runner(spec, ref, tgt, timer)
    print("RESULT " + json.dumps({"stages": timer.stages, "quality": quality}), flush=True)


if __name__ == "__main__":
    main()
