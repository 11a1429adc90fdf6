"""acsleuth.parallel: single-process no-ops, and two gloo processes checked against one process.

The two-process checks run once, in one spawned run (spawning is slow), by ``_worker``; each
rank saves what it computed to ``rank<r>.pt`` and the tests below compare those results with
single-process computations done here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from _helpers import run_ranks
from torch import Tensor, nn

from acsleuth import _extension, ops, parallel
from acsleuth.nn import Critic, MemoryBank
from acsleuth.stages.kin import sharded_kin_topk
from acsleuth.train import AdversarialConfig, AdversarialStep, train_adversarial

WORLD = 2
TIMEOUT_S = 180

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable")


def _kin_backends() -> list[str]:
    _extension.load()
    return ["torch", "cpu"] if _extension.HAS_OPS else ["torch"]


# ------------------------------------------------------------------ shared inputs


def _kin_cases() -> list[dict[str, Any]]:
    """Queries, full keys, k, metric and each rank's ``(start, stop)`` block of the keys."""
    gen = torch.Generator().manual_seed(0)
    query = torch.randint(-2, 3, (9, 4), generator=gen).float()
    keys = torch.randint(-2, 3, (13, 4), generator=gen).float()
    keys[7:12] = keys[1:6]  # duplicate rows, one copy per rank: ties across shards
    keys[12] = keys[3]
    query[0] = 0.0  # every similarity 0: all keys tie
    cos_query = torch.randn(40, 8, generator=gen, dtype=torch.float64)
    cos_keys = torch.randn(37, 8, generator=gen, dtype=torch.float64)
    cases = []
    for k in (1, 3, 10, 13):  # 10 and 13 exceed both shards (7 and 6 rows)
        cases.append(dict(query=query, keys=keys, k=k, metric="dot", blocks=[(0, 7), (7, 13)]))
    cases += [
        dict(query=query, keys=keys, k=5, metric="dot", blocks=[(0, 13), (13, 13)]),  # empty shard
        dict(query=query, keys=keys, k=5, metric="dot", blocks=[(0, 2), (2, 13)]),  # shard < k
        dict(query=query, keys=keys, k=6, metric="dot", blocks=[(6, 13), (0, 6)]),  # reversed
        dict(query=query, keys=keys, k=4, metric="cosine", blocks=[(0, 7), (7, 13)]),
        dict(query=cos_query, keys=cos_keys, k=5, metric="cosine", blocks=[(0, 19), (19, 37)]),
        dict(query=cos_query, keys=cos_keys, k=3, metric="dot", blocks=[(0, 1), (1, 37)]),
    ]
    return cases


def _small_model() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def _regression_data() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 5, generator=gen), torch.randn(8, 3, generator=gen)


def _gather_inputs(rank: int) -> dict[str, Any]:
    return {
        "rows": torch.arange(6.0).view(3, 2) if rank == 0 else torch.tensor([[-1.0, -2.0]]),
        "empty_on_1": torch.ones(2, 3) if rank == 0 else torch.ones(0, 3),
        "floats": np.arange(6.0).reshape(3, 2) if rank == 0 else np.full((2, 2), -1.0),
        "bools": np.array([True, False, True]) if rank == 0 else np.array([False, True]),
        "strings": np.array(["a", "bb"]) if rank == 0 else np.array(["ccc"]),
    }


def _enqueues(rank: int) -> list[Tensor]:
    """Different embeddings per rank; the third round holds more rows than the queue."""
    gen = torch.Generator().manual_seed(10 + rank)
    sizes = [(3, 2), (4, 5), (12, 0), (1, 1)]
    return [torch.randn(size[rank], 4, generator=gen) for size in sizes]


def _new_bank() -> MemoryBank:
    torch.manual_seed(5)
    return MemoryBank(n_items=10, dim=4)


class _TinyGenerator(nn.Module):
    """Encoder, memory bank and decoder, with a BatchNorm, like module I's generator."""

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_genes, 8), nn.BatchNorm1d(8), nn.LeakyReLU(0.2))
        self.memory = MemoryBank(n_items=12, dim=8)
        self.decoder = nn.Linear(8, n_genes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return F.relu(self.decoder(self.memory(z))), z


# ------------------------------------------------------------------ the worker


def _check_collectives(ctx: parallel.Context) -> dict[str, Any]:
    rank = ctx.rank
    out: dict[str, Any] = {"context": ctx}

    kin = {}
    for backend in _kin_backends():
        os.environ["ACSLEUTH_BACKEND"] = backend
        results = []
        for case in _kin_cases():
            start, stop = case["blocks"][rank]
            results.append(
                sharded_kin_topk(
                    case["query"],
                    case["keys"][start:stop],
                    key_offset=start,
                    k=case["k"],
                    metric=case["metric"],
                    ctx=ctx,
                )
            )
        kin[backend] = results
    os.environ.pop("ACSLEUTH_BACKEND")
    out["kin"] = kin
    try:
        sharded_kin_topk(torch.ones(2, 3), torch.ones(rank, 3), key_offset=0, k=2, ctx=ctx)
    except ValueError as error:
        out["kin_too_few_keys"] = str(error)

    torch.manual_seed(rank)  # different initial weights per rank, then rank 0's everywhere
    model = _small_model()
    parallel.broadcast_module(model, ctx)
    out["broadcast"] = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _regression_data()
    rows = parallel.shard_rows(x.shape[0], ctx)
    F.mse_loss(model(x[rows]), y[rows]).backward()
    out["local_grads"] = [p.grad.clone() for p in model.parameters()]
    parallel.average_gradients(model.parameters(), ctx)
    out["grads"] = [p.grad.clone() for p in model.parameters()]

    bn = nn.BatchNorm1d(3)
    bn.running_mean.fill_(rank + 1.0)
    bn.running_var.fill_(2.0 * rank + 1.0)
    bn.num_batches_tracked.fill_(rank + 5)
    parallel.average_buffers(bn, ctx)
    out["bn"] = {k: v.clone() for k, v in bn.state_dict().items()}

    inputs = _gather_inputs(rank)
    out["gather_rows"] = parallel.all_gather_rows(inputs["rows"], ctx)
    out["gather_empty"] = parallel.all_gather_rows(inputs["empty_on_1"], ctx)
    out["to_main"] = {
        name: parallel.gather_to_main(inputs[name], ctx) for name in ("floats", "bools", "strings")
    }

    leaf = (torch.arange(6.0).view(2, 3) + 100 * rank).requires_grad_(True)
    gathered = parallel.all_gather_autograd(leaf, ctx)
    weight = torch.arange(12.0).view(4, 3) * (rank + 1)
    (weight * gathered).sum().backward()
    out["autograd_gathered"] = gathered.detach()
    out["autograd_grad"] = leaf.grad.clone()

    sums = (torch.tensor([1.0, 2.0, 3.0]) * (rank + 1)).requires_grad_(True)
    total = parallel.all_reduce_sum(sums, ctx)
    (total * torch.tensor([1.0, 10.0, 100.0]) * (rank + 1)).sum().backward()
    out["sum"] = total.detach()
    out["sum_grad"] = sums.grad.clone()
    plain = torch.full((2,), float(rank + 1))
    out["sum_in_place"] = parallel.all_reduce_sum(plain, ctx) is plain and plain.tolist()
    out["min"] = parallel.all_reduce_min_int(5 + 3 * rank, ctx)

    bank = _new_bank()
    for z in _enqueues(rank):
        bank.enqueue(z)
    out["queue"], out["position"] = bank.queue.clone(), int(bank.position)
    return out


def _train(ctx: parallel.Context, *, sized: bool) -> dict[str, Any]:
    """Module-I-like training on rank-specific data, 3 (rank 0) or 5 (rank 1) batches."""
    rank = ctx.rank
    torch.manual_seed(100 + rank)  # different initial weights: train_adversarial syncs them
    n_genes = 6
    generator, critic = _TinyGenerator(n_genes), Critic(n_genes)
    parallel.broadcast_module(generator, ctx)  # the caller syncs the generator's buffers
    cells = torch.rand(8 * (3 + 2 * rank), n_genes) + rank
    steps = []

    def batches() -> Any:
        split = cells.split(8)
        return list(split) if sized else (x for x in split)

    def step(x: Tensor) -> AdversarialStep:
        steps.append(x.shape[0])
        x_hat, z = generator(x)
        return AdversarialStep(x, x_hat, 30.0 * F.l1_loss(x_hat, x), aux=z)

    history = train_adversarial(
        list(generator.parameters()),
        critic,
        batches,
        step,
        AdversarialConfig(epochs=2, cosine=sized),
        after_step=lambda _, out: generator.memory.enqueue(out.aux),
        verbose=False,
    )
    parallel.average_buffers(generator, ctx)
    return {
        "steps": len(steps),
        "history": history,
        "generator": {k: v.clone() for k, v in generator.state_dict().items()},
        "critic": {k: v.clone() for k, v in critic.state_dict().items()},
    }


def _body(ctx: parallel.Context, device: torch.device, _folder: Path) -> dict[str, Any]:
    assert parallel.init("cpu") == (ctx, device)  # initialising again changes nothing
    result = _check_collectives(ctx)
    result["device"] = device
    result["train_sized"] = _train(ctx, sized=True)
    result["train_unsized"] = _train(ctx, sized=False)
    return result


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, Any]]:
    """``_body`` on two gloo processes; what each rank returned, in rank order."""
    return run_ranks(_body, tmp_path_factory.mktemp("parallel"), world=WORLD, timeout_s=TIMEOUT_S)


# ------------------------------------------------------------------ single process


def test_shards_are_contiguous_balanced_and_cover_every_row() -> None:
    for world in (1, 2, 3, 7):
        for n in (0, 1, 5, 6, 20):
            shards = [
                parallel.shard_rows(n, parallel.Context(r, world, r, "gloo")) for r in range(world)
            ]
            np.testing.assert_array_equal(np.concatenate(shards), np.arange(n))
            sizes = [s.size for s in shards]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_single_process_context_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx, device = parallel.init("cpu")
    assert ctx == parallel.context() == parallel.SINGLE and device == torch.device("cpu")
    assert ctx.is_main and not ctx.distributed

    torch.manual_seed(0)
    model = nn.Sequential(_small_model(), nn.BatchNorm1d(3))
    model(torch.randn(4, 5)).sum().backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    parallel.average_gradients(model.parameters(), ctx)
    parallel.broadcast_module(model, ctx)
    parallel.average_buffers(model, ctx)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))

    t = torch.randn(3, 2)
    array = np.arange(4)
    assert parallel.all_gather_rows(t, ctx) is t
    assert parallel.all_gather_autograd(t, ctx) is t
    assert parallel.all_reduce_sum(t, ctx) is t
    assert parallel.all_reduce_min_int(7, ctx) == 7
    assert parallel.gather_to_main(array, ctx) is array

    case = _kin_cases()[2]
    expected = ops.kin_topk(case["query"], case["keys"], k=case["k"], metric="dot")
    got = sharded_kin_topk(
        case["query"], case["keys"], key_offset=0, k=case["k"], metric="dot", ctx=ctx
    )
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


# ------------------------------------------------------------------ two processes


def test_init_joins_the_torchrun_group(ranks) -> None:
    assert [r["context"] for r in ranks] == [
        parallel.Context(rank, WORLD, rank, "gloo") for rank in range(WORLD)
    ]
    assert [r["context"].is_main for r in ranks] == [True, False]
    assert all(r["device"] == torch.device("cpu") for r in ranks)


@pytest.mark.parametrize("backend", _kin_backends())
def test_sharded_kin_topk_equals_kin_topk_on_all_keys(ranks, backend, monkeypatch) -> None:
    monkeypatch.setenv("ACSLEUTH_BACKEND", backend)
    for i, case in enumerate(_kin_cases()):
        values, indices = ops.kin_topk(
            case["query"], case["keys"], k=case["k"], metric=case["metric"]
        )
        for rank in ranks:
            got_values, got_indices = rank["kin"][backend][i]
            assert torch.equal(got_indices, indices), (i, case["k"], case["blocks"])
            if case["query"].dtype == torch.float32 and case["metric"] == "dot":
                assert torch.equal(got_values, values)  # small integers: exact in any order
            else:  # the shards' GEMMs may round differently from the full one
                torch.testing.assert_close(got_values, values)


def test_sharded_kin_topk_refuses_k_above_the_total_keys(ranks) -> None:
    for rank in ranks:
        assert "only 1 keys" in rank["kin_too_few_keys"]


def test_broadcast_then_average_gradients_is_the_full_batch_gradient(ranks) -> None:
    torch.manual_seed(0)
    model = _small_model()
    for rank in ranks:
        for name, value in model.state_dict().items():
            assert torch.equal(rank["broadcast"][name], value)
    x, y = _regression_data()
    F.mse_loss(model(x), y).backward()
    assert not torch.allclose(ranks[0]["local_grads"][0], ranks[1]["local_grads"][0])
    for rank in ranks:
        for got, p in zip(rank["grads"], model.parameters(), strict=True):
            torch.testing.assert_close(got, p.grad, rtol=1e-5, atol=1e-6)
    for a, b in zip(ranks[0]["grads"], ranks[1]["grads"], strict=True):
        assert torch.equal(a, b)


def test_average_buffers_averages_floating_buffers_only(ranks) -> None:
    for rank, result in enumerate(ranks):
        assert torch.equal(result["bn"]["running_mean"], torch.full((3,), 1.5))
        assert torch.equal(result["bn"]["running_var"], torch.full((3,), 2.0))
        assert int(result["bn"]["num_batches_tracked"]) == rank + 5


def test_all_gather_rows_with_uneven_rows(ranks) -> None:
    inputs = [_gather_inputs(r) for r in range(WORLD)]
    for name, key in (("rows", "gather_rows"), ("empty_on_1", "gather_empty")):
        expected = torch.cat([i[name] for i in inputs])
        for rank in ranks:
            assert torch.equal(rank[key], expected)


def test_gather_to_main_concatenates_on_rank_0_only(ranks) -> None:
    inputs = [_gather_inputs(r) for r in range(WORLD)]
    for name in ("floats", "bools", "strings"):
        got = ranks[0]["to_main"][name]
        expected = np.concatenate([i[name] for i in inputs])
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
        assert ranks[1]["to_main"][name] is None


def test_all_gather_autograd_sums_the_ranks_gradients(ranks) -> None:
    leaves = [torch.arange(6.0).view(2, 3) + 100 * r for r in range(WORLD)]
    weight_sum = torch.arange(12.0).view(4, 3) * sum(r + 1 for r in range(WORLD))
    for rank, result in enumerate(ranks):
        assert torch.equal(result["autograd_gathered"], torch.cat(leaves))
        assert torch.equal(result["autograd_grad"], weight_sum[2 * rank : 2 * rank + 2])


def test_all_reduce_sum_and_min(ranks) -> None:
    for result in ranks:
        assert torch.equal(result["sum"], torch.tensor([3.0, 6.0, 9.0]))
        assert torch.equal(result["sum_grad"], torch.tensor([3.0, 30.0, 300.0]))
        assert result["sum_in_place"] == [3.0, 3.0]
        assert result["min"] == 5


def test_memory_bank_queues_stay_identical_and_match_one_process(ranks) -> None:
    bank = _new_bank()
    for rounds in zip(*(_enqueues(r) for r in range(WORLD)), strict=True):
        bank.enqueue(torch.cat(rounds))
    for result in ranks:
        assert torch.equal(result["queue"], bank.queue)
        assert result["position"] == int(bank.position)


@pytest.mark.parametrize("mode", ["train_sized", "train_unsized"])
def test_training_keeps_ranks_identical_despite_different_batch_counts(ranks, mode) -> None:
    first, second = (r[mode] for r in ranks)
    assert first["steps"] == second["steps"] == 2 * 3  # 2 epochs of the smaller rank's 3 batches
    assert first["history"] == second["history"]
    for part in ("generator", "critic"):
        assert first[part].keys() == second[part].keys()
        for name, value in first[part].items():
            assert torch.equal(value, second[part][name]), (part, name)
