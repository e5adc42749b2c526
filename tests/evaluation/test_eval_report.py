"""``vqtk eval`` end to end on a tiny trained checkpoint: the report, its pictures, comparisons, errors."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from tiny_recipe import TINY  # noqa: E402

from vqtk.cli import _Parser, eval_cmd  # noqa: E402
from vqtk.errors import RecipeError, VqtkError  # noqa: E402
from vqtk.evaluation import compare, fid  # noqa: E402
from vqtk.evaluation.loop import evaluate, pick_indices  # noqa: E402
from vqtk.evaluation.metrics import Unavailable  # noqa: E402
from vqtk.evaluation.perceptual import LPIPSMetric, build_lpips_metric  # noqa: E402
from vqtk.evaluation.plots import code_histogram_image  # noqa: E402
from vqtk.evaluation.report import metrics_section, write_json  # noqa: E402
from vqtk.evaluation.run import run_evaluation  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vqtk")
    eval_cmd.add_commands(parser.add_subparsers(dest="command", parser_class=_Parser))
    return parser


def vqtk_eval(*argv: str) -> int:
    args = _parser().parse_args(["eval", *map(str, argv)])
    return args.func(args)


def test_report_fields_values_and_pictures(env, tmp_path, capsys):
    out = tmp_path / "reports" / "tiny.json"
    assert vqtk_eval(env, "--out", out, "--batch-size", 3) == 0
    report = json.loads(out.read_text())
    assert report["format"] == "vqtk-eval-report-1"
    assert report["checkpoint"]["step"] == 2 and report["checkpoint"]["path"].endswith("step_000002")
    assert report["data"]["source"] == "sample_photos" and report["data"]["images"] == 4  # 2 photos x 2 crops
    assert report["model"]["codebook_size"] == 32 and report["model"]["latent_grid"] == [8, 8]
    assert report["model"]["bits_per_image"] == 64 * 5
    m = report["metrics"]
    assert set(m) == {"psnr", "ssim", "lpips", "rfid", "codebook_usage", "perplexity", "index_entropy"}

    # the same numbers, recomputed here from the model and the eval set
    from vqtk.build import build_data
    from vqtk.measure import psnr
    from vqtk.pretrained import load

    model = load(env, device="cpu")
    x = torch.stack([build_data(model.recipe).eval_set()[i] for i in range(4)])
    with torch.no_grad():
        out_ = model(x)
    rec = out_.reconstruction.clamp(-1, 1)
    assert m["psnr"]["value"] == pytest.approx(float(psnr(x, rec)), abs=1e-4)
    assert m["psnr"]["unit"] == "dB" and m["psnr"]["min"] <= m["psnr"]["value"] <= m["psnr"]["max"]
    codes = out_.quantizer.indices.flatten()
    used = codes.unique().numel()
    assert m["codebook_usage"]["used_codes"] == [used] and m["codebook_usage"]["value"] == used / 32
    p = torch.bincount(codes, minlength=32).double() / codes.numel()
    h = float(-(p[p > 0] * p[p > 0].log2()).sum())
    assert m["index_entropy"]["value"] == pytest.approx(h) and m["index_entropy"]["max"] == 5.0
    assert m["perplexity"]["value"] == pytest.approx(2**h)
    assert -1 <= m["ssim"]["value"] <= 1 and m["ssim"]["std"] >= 0

    # unavailable metrics say exactly what is missing
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    assert m["lpips"] == {"available": False, "reason": m["lpips"]["reason"]}
    assert "vgg16-397923af.pth" in m["lpips"]["reason"] and str(hub) in m["lpips"]["reason"]
    assert "--lpips-weights" in m["lpips"]["reason"]
    assert m["rfid"]["available"] is False
    assert m["rfid"]["reason"].startswith(f"needs {fid.INCEPTION_FILE} in {hub}")

    # pictures next to the report: code histogram and a 2-row grid of the 4 images
    assert report["files"] == {"code_histogram": "tiny_codes.png", "reconstructions": "tiny_recon.png"}
    assert Image.open(out.parent / "tiny_codes.png").size == (900, 520)
    assert Image.open(out.parent / "tiny_recon.png").size == (4 * 18 + 2, 2 * 18 + 2)
    printed = capsys.readouterr().out
    assert "PSNR (dB)" in printed and "lpips: not computed: loss lpips:" in printed
    assert f"rfid: not computed: needs {fid.INCEPTION_FILE}" in printed


def test_data_overrides_max_images_and_image_folders(env, tmp_path):
    r = run_evaluation(env, out=tmp_path / "a.json", data_overrides=["eval_crops=3"])
    assert r["data"]["images"] == 6 and r["data"]["overrides"] == ["eval_crops=3"]
    r = run_evaluation(env, out=tmp_path / "b.json", data_overrides=["eval_crops=3"], max_images=4)
    assert r["data"]["images"] == 4 and r["data"]["set_size"] == 6
    assert pick_indices(6, 4) == [0, 2, 3, 5] and pick_indices(3, 10) == [0, 1, 2] and pick_indices(5, 1) == [0]

    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        pixels = torch.randint(0, 256, (20, 24, 3), dtype=torch.uint8, generator=gen).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    r = run_evaluation(env, out=tmp_path / "c.json", data_path=str(tmp_path / "imgs"))
    assert r["data"]["source"] == "image_folder" and r["data"]["images"] == 3
    assert r["data"]["resolution"] == 16 and r["data"]["path"] == str((tmp_path / "imgs").resolve())


def test_user_errors_are_one_line_vqtk_errors(env, tmp_path):
    with pytest.raises(RecipeError, match=r"data\.bogus"):
        run_evaluation(env, out=tmp_path / "r.json", data_overrides=["bogus=1"])
    with pytest.raises(RecipeError, match=r"data\.bogus"):
        vqtk_eval(env, "--out", tmp_path / "r.json", "--data", "bogus=1")
    with pytest.raises(VqtkError, match="--data: expected KEY=VALUE, got 'eval_crops'"):
        vqtk_eval(env, "--out", tmp_path / "r.json", "--data", "eval_crops")
    with pytest.raises(VqtkError, match="--data-path: no such folder"):
        vqtk_eval(env, "--out", tmp_path / "r.json", "--data-path", tmp_path / "missing")
    with pytest.raises(VqtkError, match="--out: the report is JSON"):
        vqtk_eval(env, "--out", tmp_path / "r.txt")
    with pytest.raises(VqtkError, match="--inception-weights: no such file"):
        vqtk_eval(env, "--out", tmp_path / "r.json", "--inception-weights", tmp_path / "nope.pth")
    with pytest.raises(VqtkError, match="--lpips-weights: no such file"):
        vqtk_eval(env, "--out", tmp_path / "r.json", "--lpips-weights", tmp_path / "nope.pth")
    with pytest.raises(VqtkError, match="--batch-size: must be > 0, got 0"):
        vqtk_eval(env, "--batch-size", 0)
    with pytest.raises(VqtkError, match="--max-images: must be > 0, got -1"):
        vqtk_eval(env, "--max-images", -1)
    with pytest.raises(VqtkError, match="--workers: must be >= 0"):
        vqtk_eval(env, "--workers", -2)
    assert not (tmp_path / "r.json").exists()  # every check runs before anything is evaluated
    with pytest.raises(VqtkError, match="give a checkpoint to evaluate"):
        vqtk_eval()
    with pytest.raises(VqtkError, match="--device: 'gpu0' is not a device"):
        vqtk_eval(env, "--device", "gpu0")
    with pytest.raises(VqtkError, match="--compare: takes report files only"):
        vqtk_eval(env, "--compare", "a.json")


def test_compare_prints_reports_side_by_side(env, tmp_path, capsys):
    a, b = tmp_path / "a" / "run.json", tmp_path / "b" / "run.json"
    ra = run_evaluation(env, out=a)
    rb = json.loads(a.read_text())
    rb["metrics"]["psnr"]["value"] = ra["metrics"]["psnr"]["value"] + 2.0
    rb["metrics"]["codebook_usage"]["value"] = ra["metrics"]["codebook_usage"]["value"] / 2
    b.parent.mkdir()
    b.write_text(json.dumps(rb))
    assert vqtk_eval("--compare", a, b) == 0
    text = capsys.readouterr().out
    lines = {line.split("  ")[0].strip(): line.split() for line in text.splitlines() if "  " in line}
    header = next(line for line in text.splitlines() if line.startswith("metric"))
    assert "a/run" in header and "b/run" in header and "diff (b/run - a/run)" in header
    psnr_row = lines["PSNR (dB)"]
    assert psnr_row[-2:] == ["+2", f"{(ra['metrics']['psnr']['value'] + 2) / ra['metrics']['psnr']['value']:.4g}"]
    assert lines["codebook usage"][-1] == "0.5"
    assert lines["LPIPS"][-4:] == ["n/a", "n/a", "n/a", "n/a"]
    assert lines["images"][-2:] == ["+0", "1"]

    three = compare.compare_table([ra, rb, ra], ["x", "y", "z"])
    assert "diff" not in three and three.splitlines()[0].split() == ["metric", "better", "x", "y", "z"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(VqtkError, match="not a vqtk evaluation report"):
        vqtk_eval("--compare", a, bad)
    with pytest.raises(VqtkError, match="no such report file"):
        compare.load_report(tmp_path / "missing.json")


def test_compare_rows_include_each_codebook_of_multi_codebook_reports():
    report = {"data": {"images": 10}, "metrics": {
        "codebook_usage": {"available": True, "value": 0.5, "per_codebook": [0.75, 0.25]},
        "psnr": {"available": False, "reason": "x"}}}
    rows = compare.report_rows(report)
    assert ("  codebook 0", 0.75, "higher") in rows and ("  codebook 1", 0.25, "higher") in rows
    assert ("PSNR (dB)", None, "higher") in rows


def test_lpips_uses_the_registered_loss_with_pretrained_backbones_only(builtins_registry, monkeypatch, tmp_path):
    import lpips
    from torchvision.models import squeezenet1_1
    LPIPSConfig = builtins_registry.get("loss", "lpips").config

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def recipe_with(config):
        return types.SimpleNamespace(loss={"perceptual": types.SimpleNamespace(type="lpips", config=config)})

    # trained with a random backbone: evaluation still refuses to report a random-backbone LPIPS
    missing = build_lpips_metric(recipe=recipe_with(LPIPSConfig(net="squeeze", pretrained_backbone=False)),
                                 registry=builtins_registry)
    assert isinstance(missing, Unavailable) and "squeezenet1_1-b8a52dc0.pth" in missing.reason

    # a backbone file (random weights, the real names and shapes) makes LPIPS available
    torch.manual_seed(0)
    features = squeezenet1_1(weights=None).features
    weights = tmp_path / "squeezenet1_1-b8a52dc0.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, weights)
    metric = build_lpips_metric(recipe=recipe_with(LPIPSConfig(net="squeeze")), registry=builtins_registry,
                                backbone_weights=str(weights))
    assert isinstance(metric, LPIPSMetric) and metric.plugin == "builtins"
    assert metric.config["net"] == "squeeze" and metric.config["pretrained_backbone"] is True
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1, torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    with pytest.warns(UserWarning):  # torchvision's notice about lpips' legacy `pretrained` argument
        reference = lpips.LPIPS(net="squeeze", pretrained=True, pnet_rand=True, verbose=False).eval()
    reference.net.load_state_dict({n: features.state_dict()[n.split(".", 1)[1]]
                                   for n in reference.net.state_dict()})
    with torch.no_grad():
        expected = reference(a, b).flatten()
    assert torch.allclose(metric.distance(a, b), expected, atol=1e-6)
    assert metric.distance(a, a).abs().max() < 1e-6
    from vqtk.registry import Registry

    assert metric.implementation == "loss component 'lpips' of plugin 'builtins' (lpips package, v0.1)"
    empty = build_lpips_metric(registry=Registry())
    assert isinstance(empty, Unavailable) and "implements vqtk.interfaces.PerceptualDistance" in empty.reason


def test_histogram_picture_for_many_codes_and_codebooks():
    counts = torch.zeros(3, 5000, dtype=torch.long)
    counts[0, :4000] = torch.arange(4000) + 1
    counts[1, :10] = 7
    counts[2, 0] = 1
    image = code_histogram_image(counts)
    assert image.size == (900, 520)
    assert len(image.getcolors(maxcolors=1 << 16)) > 3  # drew lines in several colours, not a blank canvas


def test_multi_codebook_quantizer_is_scored_per_codebook(builtins_registry, tmp_path):
    from vqtk.build import build_data, build_vqgan
    from vqtk.recipe import load_recipe

    (tmp_path / "tiny.toml").write_text(TINY)
    recipe, _ = load_recipe(tmp_path / "tiny.toml", [
        'model.quantizer={type = "residual", dim = 8, num_quantizers = 3, codebook_size = 16}'],
        builtins_registry)
    torch.manual_seed(0)
    model = build_vqgan(recipe, builtins_registry).eval()
    dataset = build_data(recipe, builtins_registry).eval_set()
    result = evaluate(model, dataset, batch_size=3)
    assert result.images == 4 and result.counts.shape == (3, 16)
    with torch.no_grad():
        idx = model.encode_to_indices(torch.stack([dataset[i] for i in range(4)]))  # (4, 8, 8, 3)
    for q in range(3):
        assert torch.equal(result.counts[q], torch.bincount(idx[..., q].flatten(), minlength=16))
    usage = metrics_section(result)["codebook_usage"]
    assert usage["used_codes"] == [idx[..., q].unique().numel() for q in range(3)]
    assert usage["value"] == pytest.approx(sum(usage["per_codebook"]) / 3)
    rows = compare.report_rows({"data": {"images": 4}, "metrics": metrics_section(result)})
    assert [label for label, _, _ in rows].count("  codebook 2") == 3  # usage, perplexity, entropy


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = write_json({"metrics": {"psnr": {"value": float("nan"), "per": [1.0, float("inf")]}}}, tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"metrics": {"psnr": {"value": None, "per": [1.0, None]}}}


def _tiny_model_and_set(registry, tmp_path):
    from vqtk.build import build_data, build_vqgan
    from vqtk.recipe import load_recipe

    (tmp_path / "tiny.toml").write_text(TINY)
    recipe, _ = load_recipe(tmp_path / "tiny.toml", [], registry)
    torch.manual_seed(0)
    return recipe, build_vqgan(recipe, registry).eval(), build_data(recipe, registry).eval_set()


class _Labelled(torch.utils.data.Dataset):
    """Items of ``dataset`` as ``[image, label]`` lists (or tuples)."""

    def __init__(self, dataset, kind=list):
        self.dataset, self.kind = dataset, kind

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.kind([self.dataset[i], i % 2])


@pytest.mark.parametrize("kind", [list, tuple])
def test_evaluation_takes_image_label_items_as_lists_or_tuples(builtins_registry, tmp_path, kind):
    _, model, dataset = _tiny_model_and_set(builtins_registry, tmp_path)
    plain = evaluate(model, dataset, batch_size=3)
    labelled = evaluate(model, _Labelled(dataset, kind), batch_size=3)
    assert labelled.images == plain.images == 4
    assert torch.equal(labelled.psnr, plain.psnr) and torch.equal(labelled.counts, plain.counts)
    assert torch.equal(labelled.grid_real, plain.grid_real)


def test_data_section_reports_skipped_files_the_source_declares():
    from vqtk.evaluation.report import data_section
    from vqtk.interfaces import DataSource

    class Skipping(DataSource):
        resolution = 16

        def __init__(self, skipped):
            self.skipped = skipped

        def train_set(self):
            return []

        def eval_set(self):
            return []

        def skipped_files(self):
            return self.skipped

    recipe = types.SimpleNamespace(data=types.SimpleNamespace(type="mine"))
    assert "skipped_unreadable" not in data_section(recipe, Skipping(0), 3)
    section = data_section(recipe, Skipping(2), 3, overrides=["a=1"])
    assert section == {"source": "mine", "description": "Skipping", "resolution": 16, "set_size": 3,
                       "overrides": ["a=1"], "path": None, "skipped_unreadable": 2}


def test_perceptual_loss_is_found_by_its_capability_not_its_name():
    from vqtk import hookimpl
    from vqtk.interfaces import Loss, LossTerm, PerceptualDistance
    from vqtk.registry import Registry

    class MeanGap(Loss, PerceptualDistance):
        distance_implementation = "mean absolute gap"

        def __init__(self, *, scale: float = 1.0):
            super().__init__()
            self.scale = scale

        @classmethod
        def evaluation_options(cls, config, *, weights=None):
            return type(config)(scale=2.0)  # evaluation options come from the class

        def distance(self, a, b):
            return self.scale * (a - b).abs().flatten(1).mean(1)

        def generator_loss(self, inputs):
            return LossTerm(value=self.distance(inputs.real, inputs.reconstruction).mean())

    class Plugin:
        @hookimpl
        def vqtk_register_components(self, register):
            register("loss", "mean_gap", MeanGap)

    registry = Registry()
    registry.register_plugin(Plugin(), "gaps")
    recipe = types.SimpleNamespace(loss={"pixel": types.SimpleNamespace(type="l1", config=None),
                                         "perceptual": types.SimpleNamespace(
                                             type="mean_gap", config=registry.get("loss", "mean_gap").config())})
    for r in (recipe, None):  # the recipe's loss, or the registered one with its defaults
        metric = build_lpips_metric(recipe=r, registry=registry)
        assert isinstance(metric, LPIPSMetric) and metric.config == {"scale": 2.0}
        assert metric.implementation == "loss component 'mean_gap' of plugin 'gaps' (mean absolute gap)"
        a = torch.zeros(2, 3, 4, 4)
        assert metric.distance(a, a + 0.5).tolist() == [1.0, 1.0]
    # a loss without the capability is never taken for LPIPS, whatever its name
    from vqtk_builtins.losses import L1Loss

    class Impostor:
        @hookimpl
        def vqtk_register_components(self, register):
            register("loss", "lpips", L1Loss)

    named_lpips = Registry()
    named_lpips.register_plugin(Impostor(), "impostor")
    recipe = types.SimpleNamespace(loss={"lpips": types.SimpleNamespace(type="lpips", config=None)})
    missing = build_lpips_metric(recipe=recipe, registry=named_lpips)
    assert isinstance(missing, Unavailable) and "PerceptualDistance" in missing.reason
