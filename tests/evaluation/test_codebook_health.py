"""The training-time codebook health tracker: windowed and per-epoch usage, dead codes, warnings, restarts."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vqtk.interfaces import Quantizer, QuantizerOutput, RestartableQuantizer
from vqtk.measure import code_histogram, code_usage, perplexity
from vqtk.train.codebook_health import CodebookHealth, supports_restart


def _idx(*codes: int) -> torch.Tensor:
    """A (1, 1, n) index grid holding the given codes."""
    return torch.tensor(codes).view(1, 1, -1)


class NearestCode(Quantizer):
    """Nearest-code quantizer with a gradient-trained codebook; does not declare restarts."""

    def __init__(self, *, dim: int, codebook_size: int, init: torch.Tensor):
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.codebook = nn.Parameter(init.clone())

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        b, d, h, w = z.shape
        x = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = torch.cdist(x, self.codebook).argmin(dim=1)
        e = self.codebook[idx]
        loss = F.mse_loss(e, x.detach()) + 0.25 * F.mse_loss(x, e.detach())
        q = x + (e - x).detach()
        return QuantizerOutput(quantized=q.view(b, h, w, d).permute(0, 3, 1, 2),
                               indices=idx.view(b, h, w), loss=loss)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codebook[indices].permute(0, 3, 1, 2)


class ToyVQ(NearestCode, RestartableQuantizer):
    """:class:`NearestCode` declaring the restart capability."""

    @torch.no_grad()
    def restart_codes(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        self.codebook[code_ids] = vectors.to(self.codebook.dtype)


class PlainQuantizer(NearestCode):
    """Has a ``restart_codes`` method but does not declare the capability: never restarted."""

    def restart_codes(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        raise AssertionError("called without the declared capability")


class SometimesRestartable(ToyVQ):
    """Declares the capability but opts out per instance."""

    def supports_restarts(self) -> bool:
        return False


def test_window_usage_and_dead_codes_on_a_constructed_sequence():
    h = CodebookHealth(codebook_size=6, window=3)
    assert h.check() == {}  # nothing observed yet
    h.observe(_idx(0, 1), step=1)
    first = h.check()
    assert first["codebook/window_usage"] == pytest.approx(2 / 6) and first["codebook/dead_codes"] == 4
    assert not h.window_full and first["codebook/low_usage"] == 0.0
    h.observe(_idx(1, 2), step=2)
    h.observe(_idx(3), step=3)
    assert h.window_full
    r = h.check()
    assert r["codebook/window_usage"] == pytest.approx(4 / 6) and r["codebook/dead_codes"] == 2
    assert [d.tolist() for d in h.dead_codes()] == [[4, 5]]
    h.observe(_idx(3, 3), step=4)  # step 1 leaves the window: code 0 dies
    assert h.check()["codebook/dead_codes"] == 3 and [d.tolist() for d in h.dead_codes()] == [[0, 4, 5]]
    h.observe(_idx(3), step=5)
    r = h.check()
    assert r["codebook/window_usage"] == pytest.approx(1 / 6) and r["codebook/dead_codes"] == 5


def test_gradient_accumulation_calls_share_a_step():
    h = CodebookHealth(codebook_size=4, window=1)
    h.observe(_idx(0), step=7)
    h.observe(_idx(1), step=7)  # second micro-batch of step 7
    assert h.usage() == [0.5]
    h.observe(_idx(2), step=8)
    assert h.usage() == [0.25]


def test_per_codebook_usage_for_multi_codebook_indices():
    h = CodebookHealth(codebook_size=4, num_codebooks=2, window=2)
    both = torch.stack([_idx(0, 1, 2, 3), _idx(0, 0, 0, 0)], dim=-1)  # (1, 1, 4, 2)
    h.observe(both, step=1)
    h.observe(both, step=2)
    r = h.check()
    assert r["codebook/window_usage_q0"] == 1.0 and r["codebook/window_usage_q1"] == 0.25
    assert r["codebook/window_usage"] == pytest.approx(0.625) and r["codebook/dead_codes"] == 3
    with pytest.raises(ValueError, match=r"expected indices \(B, h, w, 2\)"):
        h.observe(_idx(0), step=3)


def test_low_usage_warning_is_logged_once_per_crossing(caplog):
    h = CodebookHealth(codebook_size=6, window=3, min_usage=0.5)
    flags = []
    sequence = {1: (0, 1), 2: (1, 2), 3: (3,), 4: (3,), 5: (3,), 6: (3,), 7: (0, 1, 2, 4, 5),
                8: (3,), 9: (3,), 10: (3,), 11: (3,)}
    with caplog.at_level(logging.INFO, logger="vqtk"):
        for step, codes in sequence.items():
            h.observe(_idx(*codes), step=step)
            flags.append(h.check(step=step)["codebook/low_usage"])
    # window usage: 2/6 (window not full) 3/6 4/6 3/6 1/6 1/6 6/6 6/6 5/6 1/6 1/6
    assert flags == [0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("codebook usage 16.7% over the last 3 steps is below min_usage 50.0% at step 5")
    assert "at step 10" in warnings[1]
    assert any("back above min_usage" in r.getMessage() and "step 7" in r.getMessage() for r in caplog.records)


def test_attached_tracker_observes_training_forwards_only():
    q = ToyVQ(dim=2, codebook_size=4, init=torch.tensor([[0.0, 0], [1, 0], [0, 1], [1, 1]]))
    h = CodebookHealth(codebook_size=4, window=10, restart_dead_codes=True, reservoir_size=16)
    step = {"now": 1}
    handle = h.attach(q, step=lambda: step["now"])
    z = torch.tensor([[0.0, 0.1], [0.9, 0.0]]).T.reshape(1, 2, 1, 2)  # codes 0 and 1
    q.train()
    q(z)
    assert h.usage() == [0.5] and h.latest_step == 1 and h.filled == 2
    assert torch.equal(h.reservoir[:2].sort(dim=0).values, z.reshape(2, 2).T.sort(dim=0).values)
    q.eval()
    step["now"] = 2
    q(torch.ones(1, 2, 1, 1))  # code 3, but in eval mode: not observed
    assert h.usage() == [0.5] and h.latest_step == 1
    handle.remove()
    q.train()
    q(torch.ones(1, 2, 1, 1))
    assert h.latest_step == 1


def _toy_run(restart: bool, steps: int = 12, seed: int = 0) -> tuple[float, CodebookHealth, ToyVQ]:
    """A codebook initialised far from the data (one code wins everything), trained by SGD."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(16, 2, generator=gen) * 3
    init = torch.full((16, 2), 20.0) + torch.randn(16, 2, generator=gen) * 0.1
    q = ToyVQ(dim=2, codebook_size=16, init=init)
    health = CodebookHealth(codebook_size=16, window=3, restart_dead_codes=restart, reservoir_size=64)
    step = {"now": 0}
    health.attach(q, step=lambda: step["now"])
    q.train()
    for s in range(1, steps + 1):
        step["now"] = s
        pts = centres[torch.randint(0, 16, (64,), generator=gen)] + 0.05 * torch.randn(64, 2, generator=gen)
        out = q(pts.T.reshape(1, 2, 8, 8))
        q.codebook.grad = None
        out.loss.backward()
        with torch.no_grad():  # plain SGD (torch.optim's first step imports much of torch._dynamo)
            q.codebook -= 0.5 * q.codebook.grad
        health.check(step=s)
    q.eval()
    test = centres.repeat(4, 1) + 0.05 * torch.randn(64, 2, generator=gen)
    used = q(test.T.reshape(1, 2, 8, 8)).indices.unique().numel() / 16
    return used, health, q


def test_dead_code_restart_revives_codes_on_a_toy_run(caplog):
    with caplog.at_level(logging.INFO, logger="vqtk"):
        without, h0, _ = _toy_run(restart=False)
        with_restart, h1, _ = _toy_run(restart=True)
    assert without <= 2 / 16  # collapsed: the one code nearest to the data takes every point
    assert with_restart >= 0.75
    assert h0.total_restarted == 0 and h1.total_restarted >= 14
    restarts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("restarted")]
    assert restarts and restarts[0].endswith("dead codes at step 3")  # first check with a full window
    assert h1.usage()[0] > h0.usage()[0]


def test_check_reports_restarted_codes_and_gives_them_a_full_window():
    q = ToyVQ(dim=2, codebook_size=4, init=torch.zeros(4, 2))
    h = CodebookHealth(codebook_size=4, window=2, restart_dead_codes=True, reservoir_size=32)
    z = torch.arange(8.0).view(1, 2, 2, 2)
    h.observe(_idx(0), step=1, latents=z)  # each call keeps up to 32 // 8 = 4 positions
    h.observe(_idx(0), step=2, latents=z + 100)
    assert h.filled == 8
    r = h.check(quantizer=q)
    assert r["codebook/dead_codes"] == 3 and r["codebook/restarted_codes"] == 3
    restarted = q.codebook[1:].detach()
    vectors = torch.cat([z, z + 100]).permute(0, 2, 3, 1).reshape(-1, 2)
    assert all(any(torch.equal(row, v) for v in vectors) for row in restarted)  # codes are real latents
    assert len({tuple(row.tolist()) for row in restarted}) == 3  # distinct latents
    assert h.usage() == [1.0]  # restarted codes count as used at the latest step
    assert "codebook/restarted_codes" not in h.check(quantizer=q)


@pytest.mark.parametrize("kind", [PlainQuantizer, SometimesRestartable])
def test_restart_without_the_capability_warns_once_and_changes_nothing(caplog, kind):
    q = kind(dim=2, codebook_size=4, init=torch.zeros(4, 2))
    assert not supports_restart(q) and supports_restart(ToyVQ(dim=2, codebook_size=1, init=torch.zeros(1, 2)))
    assert isinstance(ToyVQ(dim=2, codebook_size=1, init=torch.zeros(1, 2)), RestartableQuantizer)
    assert not isinstance(PlainQuantizer(dim=2, codebook_size=1, init=torch.zeros(1, 2)), RestartableQuantizer)
    h = CodebookHealth(codebook_size=4, window=1, restart_dead_codes=True)
    with caplog.at_level(logging.WARNING, logger="vqtk"):
        for step in (1, 2):
            h.observe(_idx(0), step=step, latents=torch.ones(1, 2, 1, 1))
            r = h.check(quantizer=q)
    assert "codebook/restarted_codes" not in r and torch.equal(q.codebook, torch.zeros(4, 2))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and f"{kind.__name__} does not support restarts" in messages[0]


def test_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(3)
    batches = [(torch.randint(0, 8, (1, 2, 2), generator=gen), torch.randn(1, 3, 2, 2, generator=gen))
               for _ in range(6)]
    a = CodebookHealth(codebook_size=8, window=2, restart_dead_codes=True, reservoir_size=8, seed=5)
    for s, (idx, z) in enumerate(batches[:3], 1):
        a.observe(idx, step=s, latents=z)
    b = CodebookHealth(codebook_size=8, window=2, restart_dead_codes=True, reservoir_size=8, seed=99)
    b.load_state_dict(a.state_dict())
    qa = ToyVQ(dim=3, codebook_size=8, init=torch.zeros(8, 3))
    qb = ToyVQ(dim=3, codebook_size=8, init=torch.zeros(8, 3))
    for s, (idx, z) in enumerate(batches[3:], 4):
        a.observe(idx, step=s, latents=z)
        b.observe(idx, step=s, latents=z)
        assert a.check(quantizer=qa) == b.check(quantizer=qb)
    assert torch.equal(qa.codebook, qb.codebook) and torch.equal(a.reservoir, b.reservoir)
    with pytest.raises(ValueError, match="state is for"):
        CodebookHealth(codebook_size=4).load_state_dict(a.state_dict())


EPOCH_KEYS = ("codebook/epoch_usage", "codebook/epoch_perplexity")


def test_epoch_usage_and_perplexity_across_an_epoch_boundary(caplog):
    h = CodebookHealth(codebook_size=8, window=1)
    h.set_epoch(0)
    h.observe(_idx(0, 1, 0, 1), step=1)
    assert not set(EPOCH_KEYS) & set(h.check())  # the epoch has not ended
    h.set_epoch(0)  # same epoch: nothing closes
    h.observe(_idx(0, 1, 2, 2), step=2)
    h.set_epoch(1)  # step 3 draws the first batch of epoch 1
    h.observe(_idx(3, 4, 5, 6), step=3)
    with caplog.at_level(logging.INFO, logger="vqtk"):
        r = h.check(step=3)
    # epoch 0: codes 0, 1, 2 three, three and two times of 8 positions; epoch 1's codes are not in it
    p = torch.tensor([3, 3, 2]) / 8
    assert r["codebook/epoch_usage"] == pytest.approx(3 / 8)
    assert r["codebook/epoch_perplexity"] == pytest.approx(float(2 ** -(p * p.log2()).sum()))
    assert r["codebook/window_usage"] == pytest.approx(4 / 8)  # the window is the last step only
    assert "epoch 0: 37.5% of the codes used, perplexity 3.0" in caplog.text
    assert not set(EPOCH_KEYS) & set(h.check())  # reported once
    h.observe(_idx(3, 3, 3, 3), step=4)
    h.set_epoch(2)
    r = h.check()
    assert r["codebook/epoch_usage"] == pytest.approx(4 / 8)  # codes 3, 4, 5, 6
    assert r["codebook/epoch_perplexity"] == pytest.approx(float(2 ** -(torch.tensor([5, 1, 1, 1]) / 8 * (
        torch.tensor([5, 1, 1, 1]) / 8).log2()).sum()))


def test_epoch_counts_are_the_measure_histogram_per_codebook():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 16, (2, 3, 3, 2), generator=gen) for _ in range(3)]
    h = CodebookHealth(codebook_size=16, num_codebooks=2, window=5)
    h.set_epoch(4)
    for step, idx in enumerate(batches, 1):
        h.observe(idx, step=step)
    expected = code_histogram(torch.cat(batches), 16, 2)
    assert torch.equal(h.epoch_counts, expected)
    h.set_epoch(5)
    r = h.check()
    usage, ppl = code_usage(expected).tolist(), perplexity(expected).tolist()
    for q in range(2):
        assert r[f"codebook/epoch_usage_q{q}"] == pytest.approx(usage[q])
        assert r[f"codebook/epoch_perplexity_q{q}"] == pytest.approx(ppl[q])
    assert r["codebook/epoch_usage"] == pytest.approx(sum(usage) / 2)
    assert r["codebook/epoch_perplexity"] == pytest.approx(sum(ppl) / 2)
    assert not h.epoch_counts.any()  # epoch 5 starts empty


def test_without_set_epoch_nothing_per_epoch_is_reported():
    h = CodebookHealth(codebook_size=4, window=1)
    for step in (1, 2, 3):
        h.observe(_idx(step), step=step)
        assert not set(EPOCH_KEYS) & set(h.check())


def test_epoch_histogram_survives_a_resume_mid_epoch():
    def feed(h, steps):
        for step, epoch, codes in steps:
            h.set_epoch(epoch)
            h.observe(_idx(*codes), step=step)

    before, after = [(1, 0, (0, 1)), (2, 0, (2,))], [(3, 0, (2, 3)), (4, 1, (7,))]
    straight = CodebookHealth(codebook_size=8, window=2)
    feed(straight, before + after)
    first = CodebookHealth(codebook_size=8, window=2)
    feed(first, before)
    resumed = CodebookHealth(codebook_size=8, window=2)
    resumed.load_state_dict(first.state_dict())
    feed(resumed, after)
    a, b = straight.check(), resumed.check()
    assert a == b and a["codebook/epoch_usage"] == pytest.approx(4 / 8)
    # a checkpoint saved after the epoch ended but before the check keeps the ended epoch
    pending = CodebookHealth(codebook_size=8, window=2)
    feed(pending, before + after)
    later = CodebookHealth(codebook_size=8, window=2)
    later.load_state_dict(pending.state_dict())
    assert later.check() == a
    # a state from before per-epoch counts: the epoch it resumes in is incomplete and not reported
    old = {k: v for k, v in first.state_dict().items() if not k.startswith(("epoch", "ended"))}
    legacy = CodebookHealth(codebook_size=8, window=2)
    legacy.load_state_dict(old)
    feed(legacy, after)
    assert not set(EPOCH_KEYS) & set(legacy.check())
    feed(legacy, [(5, 1, (5,)), (6, 2, (6,))])
    assert legacy.check()["codebook/epoch_usage"] == pytest.approx(2 / 8)  # epoch 1: codes 7 and 5


def test_trainer_logs_each_epochs_usage_from_that_epochs_codes(tmp_path):
    from vqtk import testing
    from vqtk.recipe import recipe_from_dict
    from vqtk.recipe.converter import RecipeConverter
    from vqtk.train.stage1 import Stage1Trainer

    registry = testing.registry_with()
    recipe = recipe_from_dict(testing.tiny_recipe(data={"samples_per_epoch": 4},  # batch 2: 2 steps an epoch
                                                  train={"steps": 5, "log_every": 1}), registry)
    trainer = Stage1Trainer(recipe, RecipeConverter(registry).unstructure(recipe), tmp_path / "run",
                            registry=registry, progress=False)
    seen: dict[int, list[torch.Tensor]] = {}

    def record(module, _inputs, output):
        if module.training:  # the trainer's own hook also sees training forwards only
            seen.setdefault(trainer.stream.state.epoch, []).append(output.indices.detach().clone())

    trainer.model.quantizer.register_forward_hook(record)
    trainer.run()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r for r in lines if "codebook/epoch_usage" in r}
    assert sorted(logged) == [3, 5]  # steps 3 and 5 draw the first batches of epochs 1 and 2
    k = trainer.model.quantizer.codebook_size
    for step, epoch in ((3, 0), (5, 1)):
        counts = code_histogram(torch.cat(seen[epoch]), k)
        assert logged[step]["epoch"] == epoch + 1
        assert logged[step]["codebook/epoch_usage"] == pytest.approx(float(code_usage(counts)[0]))
        assert logged[step]["codebook/epoch_perplexity"] == pytest.approx(float(perplexity(counts)[0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (host-sync check)")
def test_observe_never_synchronises_on_cuda():
    h = CodebookHealth(codebook_size=1024, num_codebooks=2, window=5, restart_dead_codes=True,
                       reservoir_size=256, device="cuda")
    idx = torch.randint(0, 1024, (8, 16, 16, 2), device="cuda")
    z = torch.randn(8, 4, 16, 16, device="cuda")
    h.observe(idx, step=0, latents=z)  # first call allocates the reservoir
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            h.set_epoch(step // 2)
            h.observe(idx, step=step, latents=z)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert h.check()["codebook/window_usage"] > 0


@pytest.mark.parametrize("kind, options", [
    ("vq", {"dim": 8, "codebook_size": 32}),
    ("factorized", {"dim": 8, "codebook_size": 32, "codebook_dim": 4}),
    ("ema_vq", {"dim": 8, "codebook_size": 32}),
    ("residual", {"dim": 8, "codebook_size": 32, "num_quantizers": 2}),
])
def test_builtin_quantizers_follow_the_protocol_when_they_implement_it(builtins_registry, kind, options, caplog):
    spec = builtins_registry.get("quantizer", kind)
    q = spec.create(spec.config(**options)).eval()
    vectors = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([3, 7, 11, 20, 31])
    h = CodebookHealth(codebook_size=32, window=1, restart_dead_codes=True, reservoir_size=40)
    h.observe(_idx(0), step=1, latents=vectors.T.reshape(1, 8, 1, 5))
    if supports_restart(q):
        q.restart_codes(ids, vectors)  # the latents quantize to exactly the restarted codes
        assert q(vectors.view(5, 8, 1, 1)).indices.flatten().tolist() == ids.tolist()
        assert h.check(quantizer=q)["codebook/restarted_codes"] == 5
    else:  # not implemented yet: the tracker says so and leaves the codebook alone
        before = {k: v.clone() for k, v in q.state_dict().items()}
        with caplog.at_level(logging.WARNING, logger="vqtk"):
            assert "codebook/restarted_codes" not in h.check(quantizer=q)
        assert "does not support restarts" in caplog.text
        assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())


def test_ema_vq_declares_restarts_and_decides_per_instance(builtins_registry):
    def make(kind, **options):
        spec = builtins_registry.get("quantizer", kind)
        return spec.create(spec.config(dim=4, codebook_size=8, **options))

    single, layered = make("ema_vq"), make("residual", num_quantizers=2)
    assert isinstance(single, RestartableQuantizer) and isinstance(layered, RestartableQuantizer)
    assert single.supports_restarts() and supports_restart(single)
    # residual layers' codes live in residual space: declared, but this instance says no
    assert not layered.supports_restarts() and not supports_restart(layered)
    with pytest.raises(ValueError, match="cannot restart codes"):
        layered.restart_codes(torch.tensor([0]), torch.zeros(1, 4))


def _ddp_rank(rank: int, init_file: str, result_dir: str) -> None:
    """One of two gloo ranks: each sees different codes and latents; results saved for the parent."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        q = ToyVQ(dim=2, codebook_size=8, init=torch.zeros(8, 2))
        h = CodebookHealth(codebook_size=8, window=2, restart_dead_codes=True, reservoir_size=16, seed=rank)
        z = torch.full((1, 2, 1, 2), float(rank + 1))  # rank 0 keeps latents of 1s, rank 1 of 2s
        h.set_epoch(0)
        for step in (1, 2):
            h.observe(_idx(rank, rank + 2), step=step, latents=z)  # rank 0: codes 0, 2; rank 1: codes 1, 3
        h.set_epoch(1)
        record = h.check(quantizer=q)
        result = {"record": record, "codebook": q.codebook.detach().clone(), "usage": h.usage()}
        h.observe(_idx(4 + rank), step=3)  # epoch 1: rank 0 code 4, rank 1 code 5
        h.check(quantizer=q)
        result["epoch_counts"] = h.epoch_counts.clone()  # merged into rank 0's at the check
        torch.save(result, f"{result_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_share_usage_and_apply_the_same_restarts(tmp_path):
    import torch.multiprocessing as mp

    # fork: the children reuse this process's imports (spawn would import torch twice more)
    mp.start_processes(_ddp_rank, args=(str(tmp_path / "pg"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    # usage of the global batch: codes 0-3 used across the two ranks
    assert r0["record"]["codebook/window_usage"] == r1["record"]["codebook/window_usage"] == 0.5
    assert r0["record"]["codebook/dead_codes"] == 4
    assert r0["record"]["codebook/restarted_codes"] == r1["record"]["codebook/restarted_codes"] == 4
    assert torch.equal(r0["codebook"], r1["codebook"])  # identical codebooks on both ranks
    assert torch.equal(r0["codebook"][4:], torch.ones(4, 2))  # rank 0's latents
    assert r0["usage"] == r1["usage"] == [1.0]
    # the epoch's histogram is the global batch's: codes 0-3, each twice
    for r in (r0, r1):
        assert r["record"]["codebook/epoch_usage"] == 0.5
        assert r["record"]["codebook/epoch_perplexity"] == pytest.approx(4.0)
    assert r0["epoch_counts"][0, 4:6].tolist() == [1, 1] and not r1["epoch_counts"].any()
