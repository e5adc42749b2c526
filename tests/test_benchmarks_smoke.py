"""The benchmark package: a smoke run writes its report, and the pieces it is built from are right.

No timing is asserted anywhere: only that figures exist, are consistent with
each other, and that the baseline really is the architecture vqtk is compared with.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import cli, report  # noqa: E402
from benchmarks.baseline_taming import (  # noqa: E402
    LPIPS,
    Decoder,
    Encoder,
    NLayerDiscriminator,
    TamingTrainStep,
    VectorQuantizer,
)
from benchmarks.flops import count_flops, utilisation  # noqa: E402
from benchmarks.matrix import QUANTIZERS, STAGE1_CONFIGS, fsq_levels, stage1_overrides, toml_literal  # noqa: E402
from benchmarks.memory import PeakMemory  # noqa: E402
from benchmarks.presets import SMOKE  # noqa: E402
from benchmarks.timing import paired_ratios, quantile, summarise  # noqa: E402

SMOKE_ONLY = ["stage1:reference", "stage1:compile", "codec:vq", "prior", "quantizer:fsq", "optimizer:make_optimizer",
              "data"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    before = (logging.getLogger("vqtk").level, torch.get_num_threads())
    code = cli.main(["--smoke", "--device", "cpu", "--threads", "1", "--warmup", "0", "--repeats", "2",
                     "--peak-tflops", "2.0", "--only", *SMOKE_ONLY, "--out", str(out)])
    assert (logging.getLogger("vqtk").level, torch.get_num_threads()) == before  # left as it was
    return code, out


def test_smoke_run_writes_json_markdown_and_png(smoke_run):
    code, out = smoke_run
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == 1
    machine = data["machine"]
    for key in ("cpu_model", "cpu_cores_usable", "torch", "torch_threads", "device", "gpu_name",
                "load_average_start", "load_average_end", "python"):
        assert key in machine
    assert machine["torch"] == torch.__version__ and machine["device"] == "cpu" and machine["torch_threads"] == 1
    run = data["run"]
    assert run["preset"] == "smoke" and run["repeats"] == 2 and run["warmup"] == 0 and run["peak_tflops"] == 2.0
    assert any("torch.compile skipped on CPU" in n for n in run["notes"])
    keys = [(r["family"], r["key"]) for r in data["results"]]
    assert keys == [("stage1", "reference"), ("stage1", "compile"), ("codec", "vq-encode"), ("codec", "vq-decode"),
                    ("prior", "gpt-no-cache"), ("prior", "gpt-kv-cache"), ("prior", "maskgit"),
                    ("quantizer", "fsq-train"), ("quantizer", "fsq-encode"), ("optimizer", "make_optimizer"),
                    ("data", "image_folder"), ("data", "shards"), ("data", "shards-resized")]
    assert not [r for r in data["results"] if r["error"]]

    md = (out / "results.md").read_text()
    for heading in ("## Stage-1 training step (images/s)", "## Encode to indices / decode from indices (images/s)",
                    "## Prior sampling (tokens/s)", "## Quantizer alone (vectors/s)",
                    "## Generator optimizer step (steps/s)",
                    "## Data loading, decode + augment per loader worker (images/s)"):
        assert heading in md
    assert "| vq · patchgan · eager · fp32 |" in md
    assert "| vq · patchgan · compile · fp32 | skipped: torch.compile skipped on CPU" in md

    from PIL import Image

    with Image.open(out / "results.png") as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.width == 1100 and img.height > 200


def test_smoke_stage1_record_is_consistent(smoke_run):
    _, out = smoke_run
    results = json.loads((out / "results.json").read_text())["results"]
    rec = next(r for r in results if r["key"] == "reference")
    cfg = rec["config"]
    assert cfg["batch"] == 2 and cfg["resolution"] == 32 and cfg["quantizer"] == "vq"
    assert "model.quantizer.type=\"vq\"" in cfg["overrides"]
    for side in ("vqtk", "baseline"):
        s = rec[side]
        assert len(s["times_ms"]) == 2 and s["items_per_call"] == 2
        assert s["median_ms"] == pytest.approx(sum(s["times_ms"]) / 2)
        assert s["throughput"] == pytest.approx(2 / (s["median_ms"] / 1e3))
        assert s["min_ms"] <= s["median_ms"] <= s["max_ms"]
        assert s["flops"] > 0 and s["peak_memory_mb"] is not None and s["peak_memory_mb"] >= 0
        assert s["tflops"] == pytest.approx(s["flops"] / (s["median_ms"] / 1e3) / 1e12)
        assert s["mfu"] == pytest.approx(s["tflops"] / 2.0)
    # the same encoder, decoder and discriminator sizes on both sides (vqtk's quantizer is the
    # same codebook; its parameter count matches taming's)
    assert rec["vqtk"]["params"] == rec["baseline"]["params"]
    assert rec["vqtk"]["disc_params"] == rec["baseline"]["disc_params"]
    ratios = [b / v for v, b in zip(rec["vqtk"]["times_ms"], rec["baseline"]["times_ms"])]
    assert rec["speed_ratio"]["median"] == pytest.approx(sum(ratios) / 2)
    skipped = next(r for r in results if r["key"] == "compile")
    assert skipped["skipped"].startswith("torch.compile skipped on CPU") and skipped["vqtk"] is None


def test_smoke_prior_and_quantizer_records(smoke_run):
    _, out = smoke_run
    results = {r["key"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    gpt, cached, maskgit = results["gpt-no-cache"], results["gpt-kv-cache"], results["maskgit"]
    assert gpt["vqtk"]["items_per_call"] == 2 * 4 * 4  # batch x grid tokens
    assert cached["relative_to"]["key"] == "gpt-no-cache" and maskgit["relative_to"]["speed"]["median"] > 0
    assert gpt["config"]["prior"]["dim"] == maskgit["config"]["prior"]["dim"] == 32
    fsq = results["fsq-train"]
    assert fsq["config"]["input_shape"] == [2, 8, 4, 4] and fsq["vqtk"]["items_per_call"] == 2 * 4 * 4
    assert fsq["config"]["quantizer"]["levels"] == [8, 4] and fsq["vqtk"]["codebook_size"] == 32
    opt = results["make_optimizer"]
    assert opt["vqtk"]["label"] == "make_optimizer (fused)"
    assert opt["baseline"]["label"] == "torch.optim.Adam defaults (for-loop)"


def test_smoke_data_rows_compare_loaders_and_count_workers(smoke_run):
    _, out = smoke_run
    results = {r["key"]: r for r in json.loads((out / "results.json").read_text())["results"] if r["family"] == "data"}
    assert list(results) == ["image_folder", "shards", "shards-resized"]
    step = next(r for r in json.loads((out / "results.json").read_text())["results"] if r["key"] == "reference")
    for key, r in results.items():
        assert r["unit"] == "images/s" and r["config"]["resolution"] == 32 and r["baseline"] is None
        assert r["vqtk"]["items_per_call"] == SMOKE.data_batch and r["vqtk"]["throughput"] > 0
        workers = math.ceil(step["vqtk"]["throughput"] / r["vqtk"]["throughput"])
        assert r["notes"] == [f"the stage-1 step `reference` takes {step['vqtk']['throughput']:.3g} images/s: "
                              f"{workers} such loader worker(s) keep it fed"]
        assert (r.get("relative_to") is None) == (key == "image_folder")
    assert results["shards"]["relative_to"]["key"] == "image_folder"
    assert "| shards · 32px · 1 worker |" in (out / "results.md").read_text()


# -- the pieces -----------------------------------------------------------------------


def test_bad_arguments_exit_2_with_one_line(capsys):
    assert cli.main(["--only", "stage1:nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m benchmarks: error: --only stage1:nope: no such measurement (families: stage1, "
                   "codec, prior, gpt_decode, quantizer, optimizer, data; `--list` shows every FAMILY:KEY)"]
    assert cli.main(["--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert "stage1:reference" in listed and "quantizer:vq-no-dead-code-train" in listed
    assert len(listed) == 11 + 12 + 3 + 2 + 14 + 3 + 3  # stage1, codec, prior, gpt_decode, quantizer, optimizer, data


def test_summarise_quantiles_and_paired_ratios_by_hand():
    s = summarise([0.4, 0.1, 0.2, 0.3], items=8)
    assert s["median_ms"] == pytest.approx(250.0)
    assert (s["min_ms"], s["max_ms"]) == (pytest.approx(100.0), pytest.approx(400.0))
    assert s["q1_ms"] == pytest.approx(175.0) and s["q3_ms"] == pytest.approx(325.0)
    assert s["throughput"] == pytest.approx(32.0)
    assert (s["throughput_min"], s["throughput_max"]) == (pytest.approx(20.0), pytest.approx(80.0))
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    r = paired_ratios([1.0, 2.0, 4.0], [2.0, 2.0, 2.0])
    assert (r["median"], r["min"], r["max"]) == (1.0, 0.5, 2.0)
    assert paired_ratios([1.0], [1.0, 2.0]) is None


def test_flop_count_and_utilisation_by_hand():
    lin = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(4, 16)
    assert count_flops(lambda: lin(x)) == 2 * 4 * 16 * 8
    # a parameter passed into a module under no_grad trips the per-module tracker: counted globally
    proj = torch.nn.Identity()
    weight = torch.nn.Parameter(torch.randn(16, 8))

    def f():
        with torch.no_grad():
            return x @ proj(weight)

    assert count_flops(f) == 2 * 4 * 16 * 8
    # torch.autograd.grad on a leaf module input (the R1 penalty) also trips it
    inp = torch.randn(4, 16, requires_grad=True)

    def r1():
        (grad,) = torch.autograd.grad(lin(inp).sum(), inp, create_graph=True)
        return grad

    assert count_flops(r1) == 2 * (2 * 4 * 16 * 8)  # forward mm, and the mm giving d/d(input)
    assert utilisation(2 * 10**12, 0.5, 8.0) == {"tflops": 4.0, "mfu": 0.5}
    assert utilisation(None, 0.5, 8.0) == {"tflops": None, "mfu": None}


def test_peak_memory_sees_a_64_mib_tensor():
    mem = PeakMemory(torch.device("cpu"))
    mem.start()
    mem.begin()
    t = torch.ones(16 * 2**20)  # 64 MiB, every page touched
    del t
    assert mem.end() >= 60


def test_select_and_toml_literals():
    chosen = cli.select(["stage1:bf16", "quantizer:fsq", "prior"])
    assert chosen["stage1"] == ["bf16"] and chosen["quantizer"] == ["fsq-train", "fsq-encode"]
    assert chosen["prior"] == ["gpt-no-cache", "gpt-kv-cache", "maskgit"] and chosen["codec"] == []
    assert cli.select(["quantizer:vq"])["quantizer"] == ["vq-train", "vq-encode"]
    with pytest.raises(ValueError, match="--only stage1:nope: no such measurement"):
        cli.select(["stage1:nope"])
    assert toml_literal([8, 5]) == "[8, 5]" and toml_literal(True) == "true" and toml_literal("a b") == '"a b"'
    assert fsq_levels(16384) == [8, 8, 8, 6, 5] and math.prod(fsq_levels(256)) == 240
    assert report.fmt(1234.5) == "1,234" and report.fmt(0.01234) == "0.0123" and report.fmt(None) == "–"


@pytest.mark.parametrize("config", STAGE1_CONFIGS, ids=lambda c: c.key)
def test_every_stage1_configuration_is_a_valid_recipe(config):
    from vqtk.recipe import load_recipe

    recipe, resolved = load_recipe(SMOKE.recipe_path, stage1_overrides(config, SMOKE, "cpu"))
    assert recipe.model.quantizer.type == config.quantizer
    assert recipe.model.discriminator.type == config.disc
    assert resolved["train"]["precision"] == config.precision and resolved["train"]["batch_size"] == 2
    assert resolved["model"]["encoder"]["ch_mult"] == [1, 2] and resolved["loss"]["gan"]["start_step"] == 0
    if config.quantizer not in ("fsq",):
        assert resolved["model"]["quantizer"]["dim"] == 8
    assert set(QUANTIZERS) == {"vq", "ema_vq", "factorized", "fsq", "lfq", "residual"}


def test_baseline_autoencoder_is_vqtk_taming_architecture():
    from vqtk_builtins.autoencoders import TamingDecoder, TamingEncoder

    arch = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=4, resolution=16)
    torch.manual_seed(0)
    ours_enc, ours_dec = TamingEncoder(**arch), TamingDecoder(**arch)
    base_enc, base_dec = Encoder(**arch), Decoder(**arch)
    base_enc.load_state_dict(ours_enc.state_dict())  # strict: same names and shapes
    base_dec.load_state_dict(ours_dec.state_dict())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = ours_enc(x)
        assert torch.allclose(base_enc(x), z, atol=1e-5)
        assert torch.allclose(base_dec(z), ours_dec(z), atol=1e-5)


def test_baseline_discriminator_is_vqtk_patchgan_with_actnorm():
    from vqtk_builtins.discriminators.patchgan import PatchGANDiscriminator

    torch.manual_seed(0)
    ours = PatchGANDiscriminator(ndf=8, n_layers=2, norm="actnorm")
    base = NLayerDiscriminator(ndf=8, n_layers=2)
    base.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the first training call initialises ActNorm from the batch on both
        assert torch.allclose(base(x), ours(x), atol=1e-5)
        assert int(base.main[3].initialized) == 1


def test_baseline_quantizer_math_by_hand():
    torch.manual_seed(0)
    vq = VectorQuantizer(5, 3, beta=0.25)
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    zq, loss, idx = vq(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    want = torch.cdist(flat, vq.embedding.weight.detach()).argmin(dim=1)
    assert torch.equal(idx.reshape(-1), want)
    codes = vq.embedding.weight.detach()[want].reshape(2, 2, 2, 3).permute(0, 3, 1, 2)
    assert torch.allclose(zq, codes, atol=1e-6)
    assert loss.item() == pytest.approx(1.25 * ((codes - z.detach()) ** 2).mean().item(), rel=1e-5)
    zq.sum().backward()  # straight-through: d sum(zq) / dz = 1 (plus nothing else: loss not in it)
    assert torch.allclose(z.grad, torch.ones_like(z))


def test_baseline_lpips_is_zero_on_equal_images_and_frozen():
    torch.manual_seed(0)
    lp = LPIPS("squeeze")
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    b = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    assert lp(a, a).abs().max().item() == 0.0
    d = lp(a, b)
    assert d.shape == (2, 1, 1, 1)
    d.sum().backward()
    assert b.grad is not None and all(p.grad is None for p in lp.parameters())
    lp.train()
    assert not lp.training


def test_baseline_step_updates_both_networks():
    arch = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4, resolution=16,
                dropout=0.0)
    torch.manual_seed(0)
    step = TamingTrainStep(arch=arch, n_embed=8, embed_dim=4, ndf=8, n_layers=1, lpips_net=None, lr=1e-3)
    g0 = step.model.decoder.conv_out.weight.detach().clone()
    d0 = step.disc.main[0].weight.detach().clone()
    logs = step(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert torch.isfinite(logs["loss"]) and torch.isfinite(logs["d_loss"])
    assert not torch.equal(g0, step.model.decoder.conv_out.weight)
    assert not torch.equal(d0, step.disc.main[0].weight)


def test_stage1_vs_taming_script_still_runs_its_checks(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import stage1_vs_taming
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    with pytest.raises(SystemExit, match="no taming/modules/diffusionmodules/model.py under it"):
        stage1_vs_taming.main(["--taming-root", str(tmp_path)])


def test_quality_smoke_run_writes_table_json_pictures_and_flags_collapse(tmp_path, capsys):
    from PIL import Image

    from benchmarks import quality

    before = (logging.getLogger("vqtk").level, torch.get_num_threads())
    code = quality.main(["--small", "--quantizers", "vq,fsq", "--steps", "4", "--threads", "1", "--out", str(tmp_path)])
    assert code == 0 and (logging.getLogger("vqtk").level, torch.get_num_threads()) == before
    data = json.loads((tmp_path / "quality.json").read_text())
    assert data["schema"] == 1 and data["run"]["steps"] == 4 and data["run"]["budget"] == "small"
    assert data["run"]["collapse_below"] == 0.10 and data["run"]["held_out_images"] == 4
    assert [r["quantizer"] for r in data["results"]] == ["vq", "fsq"]
    for r in data["results"]:
        for key in ("source", "settings", "overrides", "codebook_size", "psnr", "ssim", "usage", "used_codes",
                    "perplexity", "usage_curve", "epoch_usage", "train_seconds", "status"):
            assert key in r, key
        assert 0 < r["usage"] <= 1 and 1 <= r["perplexity"] <= r["codebook_size"] and r["psnr"] > 0
        assert [s for s, _ in r["usage_curve"]] == [1, 2, 3, 4]  # log_every 1 with 4 steps
        assert [e["epoch"] for e in r["epoch_usage"]] == [0, 1, 2]  # one-step epochs; the 4th has not ended
        assert r["status"] == ("COLLAPSED" if r["usage"] < 0.1 else "ok")
    vq, fsq = data["results"]
    assert vq["source"] == "vqgan_f16.toml" and vq["settings"]["threshold_ema_dead_code"] == 2.0
    assert fsq["settings"]["levels"] == [8, 4] and fsq["codebook_size"] == 32
    assert 'model.quantizer.type="vq"' in vq["overrides"] and "train.steps=4" in vq["overrides"]
    md = (tmp_path / "quality.md").read_text()
    assert md == capsys.readouterr().out.split("wrote ")[0].rstrip("\n") + "\n"
    assert "| quantizer | settings from | codes | PSNR (dB) | SSIM | usage | perplexity |" in md
    assert f"| vq | vqgan_f16.toml | 32 | {vq['psnr']:.2f} |" in md
    with Image.open(tmp_path / "quality_grid.png") as img:  # held-out row + one row per quantizer, 16 px + pad
        assert img.format == "PNG" and img.height == 3 * (16 + 2) + 2
    with Image.open(tmp_path / "quality_usage.png") as img:
        assert img.format == "PNG" and img.size == (900, 520)

    # the flag: any codebook under 10% held-out usage, never hidden
    fake = {**vq, "usage": 0.05, "usage_per_codebook": [0.05]}
    assert quality.status(fake) == "COLLAPSED" and quality.status(vq if vq["usage"] >= 0.1 else fsq) == "ok"
    assert quality.status({**vq, "usage": 0.3, "usage_per_codebook": [0.55, 0.05]}) == "COLLAPSED"
    row = next(line for line in quality.markdown({**data, "results": [fake]}).splitlines() if line.startswith("| vq"))
    assert row.endswith("| 5.0% | " + f"{vq['perplexity']:.1f} | {vq['epoch_usage'][-1]['usage']:.1%} | "
                        f"{vq['train_seconds']:.0f} | **COLLAPSED** |")

    assert quality.main(["--quantizers", "vq,nope"]) == 2
    assert capsys.readouterr().err.strip() == ("python -m benchmarks.quality: error: --quantizers nope: unknown "
                                               f"(known: {', '.join(quality.SOURCES)})")


def test_gpt_decode_family_times_vqtk_and_taming_sampling_with_and_without_cache(tmp_path):
    code = cli.main(["--smoke", "--device", "cpu", "--threads", "1", "--warmup", "0", "--repeats", "2",
                     "--only", "gpt_decode", "--out", str(tmp_path)])
    assert code == 0
    records = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["family"], r["key"], r["error"]) for r in records] == [("gpt_decode", "cached", None),
                                                                      ("gpt_decode", "uncached", None)]
    for r in records:
        assert r["baseline"]["label"].startswith("taming minGPT") and r["speed_ratio"]["median"] > 0
        assert r["config"]["ms_per_step"]["vqtk"] == pytest.approx(r["vqtk"]["median_ms"] / r["config"]["steps"])
    assert "## GPT sampling vs taming minGPT" in (tmp_path / "results.md").read_text()


def test_partial_results_are_written_after_every_row_and_render(tmp_path, monkeypatch):
    """A run stopped by a time limit keeps each finished row in results.partial.json, and
    ``python -m benchmarks.report`` renders it; a finished run removes the partial file."""
    seen: list[int] = []
    real_write_json = cli.write_json

    def spy(result, path):
        real_write_json(result, path)
        seen.append(len(json.loads(path.read_text())["results"]))

    monkeypatch.setattr(cli, "write_json", spy)
    out = tmp_path / "run"
    code = cli.main(["--smoke", "--device", "cpu", "--threads", "1", "--warmup", "0", "--repeats", "1",
                     "--only", "stage1:compile", "optimizer:make_optimizer", "--out", str(out)])
    assert code == 0
    assert seen == [1, 2]  # after each row, growing
    assert not (out / "results.partial.json").exists() and (out / "results.json").exists()

    partial = json.loads((out / "results.json").read_text())
    partial["results"] = partial["results"][:1]
    partial["run"]["partial"] = True
    (tmp_path / "results.partial.json").write_text(json.dumps(partial))
    assert report.main([str(tmp_path / "results.partial.json"), "--out", str(tmp_path / "rendered")]) == 0
    md = (tmp_path / "rendered" / "results.md").read_text()
    assert "| vq · patchgan · compile · fp32 | skipped" in md and "Generator optimizer step" not in md
    assert (tmp_path / "rendered" / "results.png").stat().st_size > 0
