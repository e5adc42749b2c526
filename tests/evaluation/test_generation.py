"""``vqtk eval`` on a prior: class-balanced resumable sampling, gFID / Inception Score, report, --compare.

A tiny class-conditional stage-2 run (3 classes of generated pictures, tokenizer and
GPT prior trained for 2 steps each) is sampled; FID uses torch-fidelity's real
Inception loaded from a generated weight file (``test_fid.weights``), so nothing is
downloaded and the numbers mean nothing beyond these tests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_fid import weights  # noqa: F401 - a session fixture: the generated Inception weight file
from tiny_recipe import TINY

from vqtk.cli import main
from vqtk.evaluation import fid
from vqtk.evaluation.generation import run_generation_eval
from vqtk.evaluation.prior_run import balanced_labels
from vqtk.evaluation.sample_store import SampleStore, batch_seed

CLASSES = 3
DATA = """
[data]
type = "image_folder"
path = "{path}"
resolution = 16
class_labels = true
"""
PRIOR = f"""
[prior]
type = "gpt"
dim = 32
depth = 1
heads = 2
num_classes = {CLASSES}

[prior_train]
steps = 2
batch_size = 4
num_samples = 3
top_k = 8
"""


def _pictures(folder, per_class=6):
    gen = torch.Generator().manual_seed(0)
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True)
        coarse = torch.rand(per_class, 3, 3, 3, generator=gen)
        for i, image in enumerate(F.interpolate(coarse, size=(20, 20), mode="bilinear")):
            Image.fromarray((image.permute(1, 2, 0) * 255).byte().numpy()).save(folder / f"class{c}" / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory):
    """A 2-step tokenizer and a 2-step 3-class GPT prior over it (``runs/x/prior``)."""
    import vqtk_builtins

    import vqtk.registry.registry as registry_module
    from vqtk.registry import Registry

    registry = Registry()
    registry.register_plugin(vqtk_builtins, "builtins")
    root = tmp_path_factory.mktemp("prior_eval")
    images = _pictures(root / "images")
    head, _, tail = TINY.partition("[data]")
    recipe = head + DATA.format(path=images) + tail[tail.index("\n[", 1):] + PRIOR
    (root / "tiny.toml").write_text(recipe)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry_module, "_default", registry)
        assert main(["run", str(root / "tiny.toml"), "--out", str(root / "run"), "--no-progress",
                     "train.steps=2", "train.image_every=100", "train.checkpoint_every=100",
                     "loss.gan.start_step=1000"]) == 0
        yield root / "run"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No Inception weights anywhere: FID and IS are unavailable, sampling alone runs."""
    monkeypatch.setenv("VQTK_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("VQTK_WEIGHTS_DIR", raising=False)


def _batches(folder):
    out = {}
    for path in sorted(folder.glob("batch_*.npz")):
        with np.load(path) as data:
            out[path.name] = (data["images"].copy(), data["labels"].copy())
    return out


def test_report_gfid_against_its_own_samples_is_zero_and_compare_works(
        prior_run, weights, tmp_path, monkeypatch, capsys):  # noqa: F811 - weights: test_fid's fixture
    out = tmp_path / "gen.json"
    args = ["eval", str(prior_run / "prior"), "--out", str(out), "--num-samples", "3", "--batch-size", "2",
            "--inception-weights", str(weights), "--device", "cpu"]
    assert main(args) == 0
    first = json.loads(out.read_text())
    assert first["format"] == "vqtk-generation-report-1" and first["checkpoint"]["stage"] == "2"
    gfid = first["metrics"]["gfid"]
    assert gfid == {"available": False, "reason": gfid["reason"]} and "--ref-stats" in gfid["reason"]
    score = first["metrics"]["inception_score"]
    assert score["available"] and score["value"] >= 1 - 1e-9 and score["splits"] == 1 and score["images"] == 3
    assert "logits_unbiased" in score["computed"] and score["implementation"].startswith("torch-fidelity 0.4")
    assert not first["metrics"]["precision_recall"]["available"]
    sampling = first["sampling"]
    assert sampling["samples"] == 3 and sampling["per_class"] == [1, 1, 1] and sampling["batches_made_now"] == 2
    assert sampling["options"] == {"temperature": 1.0, "top_k": 8, "top_p": None, "cfg_scale": 1.0, "steps": None}
    assert sampling["options_from"]["top_k"] == "recipe"
    timing = first["timing"]
    assert timing["samples_made"] == 4 and timing["sampling_samples_per_s"] > 0
    assert timing["end_to_end_samples_per_s"] > 0 and timing["metrics_seconds"] > 0
    assert first["model"]["num_classes"] == CLASSES and first["model"]["resolution"] == [16, 16]
    with Image.open(tmp_path / first["files"]["samples"]) as grid:
        assert grid.size == (2 + 2 * 18, 2 + 2 * 18)  # 3 samples of 16 px, 2 columns
    assert "gfid: not computed: needs reference statistics" in capsys.readouterr().out

    # the samples' own statistics (kept next to them, a vqtk fid-stats file) as reference: gFID ~ 0, and
    # neither sampling nor the Inception pass runs again
    ref = tmp_path / first["files"]["sample_statistics"]
    assert first["files"]["sample_statistics"] == "gen_samples/inception_3.npz"
    before = tmp_path / "before.json"
    before.write_text(out.read_text())
    with monkeypatch.context() as mp:
        mp.setattr(fid.FidInception, "forward", lambda *a: pytest.fail("the statistics were computed again"))
        assert main([*args, "--ref-stats", str(ref)]) == 0
    second = json.loads(out.read_text())
    assert second["sampling"]["batches_made_now"] == 0 and second["sampling"]["resumed_from"] == 3
    gfid = second["metrics"]["gfid"]
    assert gfid["available"] and 0 <= gfid["value"] < 1e-3 and gfid["images"] == 3
    assert gfid["reference"]["path"] == str(ref.resolve()) and gfid["protocol"] == fid.PROTOCOL
    assert "of the samples" in gfid["computed"] and "rank-deficient" in gfid["warning"]
    assert second["metrics"]["inception_score"]["value"] == score["value"]  # same stored samples
    capsys.readouterr()
    assert main(["eval", "--compare", str(before), str(out)]) == 0
    table = capsys.readouterr().out
    assert "gFID" in table and "Inception Score" in table and "samples/s, end to end" in table


def test_interrupted_sampling_resumes_to_the_same_images(prior_run, offline, tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole.json"
    args = ["--num-samples", "10", "--batch-size", "3", "--top-k", "5", "--seed", "7"]
    assert main(["eval", str(prior_run / "prior"), "--out", str(whole), *args]) == 0
    report = json.loads(whole.read_text())
    assert report["metrics"]["gfid"]["available"] is False and "fid-inception" in report["metrics"]["gfid"]["reason"]
    assert report["sampling"]["per_class"] == [4, 3, 3]  # sample i has class i mod 3

    real_write = SampleStore.write

    def stop_at_third(self, index, *a, **k):
        if index == 2:
            raise KeyboardInterrupt
        return real_write(self, index, *a, **k)

    part = tmp_path / "part.json"
    with monkeypatch.context() as mp:
        mp.setattr(SampleStore, "write", stop_at_third)
        assert main(["eval", str(prior_run / "prior"), "--out", str(part), *args]) == 130
    assert "vqtk: interrupted" in capsys.readouterr().err and not part.exists()
    assert sorted(_batches(tmp_path / "part_samples")) == ["batch_000000.npz", "batch_000001.npz"]
    assert main(["eval", str(prior_run / "prior"), "--out", str(part), *args]) == 0
    resumed = json.loads(part.read_text())["sampling"]
    assert resumed["resumed_from"] == 6 and resumed["batches_made_now"] == 2

    a, b = _batches(tmp_path / "whole_samples"), _batches(tmp_path / "part_samples")
    assert sorted(a) == sorted(b) == [f"batch_{k:06d}.npz" for k in range(4)]
    for name in a:
        assert np.array_equal(a[name][0], b[name][0]) and np.array_equal(a[name][1], b[name][1]), name
    labels = np.concatenate([a[n][1] for n in sorted(a)])
    assert labels.tolist() == [i % CLASSES for i in range(12)]
    manifest = json.loads((tmp_path / "part_samples" / "manifest.json").read_text())
    assert [m["seed"] for m in manifest["batches"]] == [batch_seed(7, k) for k in range(4)]


def test_other_settings_in_the_same_folder_are_refused_until_fresh(prior_run, offline, tmp_path, capsys):
    out = tmp_path / "r.json"
    base = ["eval", str(prior_run / "prior"), "--out", str(out), "--num-samples", "3", "--batch-size", "3"]
    assert main(base) == 0
    before = _batches(tmp_path / "r_samples")
    capsys.readouterr()
    assert main([*base, "--temperature", "0.5", "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    folder = tmp_path / "r_samples"
    assert err == [
        f"vqtk: error: --seed: the samples in {folder} were made with seed 0, not 1; rerun with the same settings "
        "to continue them, add --fresh to start over there, or choose another --out",
        f"vqtk: error: --temperature: the samples in {folder} were made with temperature 1.0, not 0.5; rerun with "
        "the same settings to continue them, add --fresh to start over there, or choose another --out",
    ]
    assert _batches(folder).keys() == before.keys()
    assert main([*base, "--temperature", "0.5", "--seed", "1", "--fresh"]) == 0
    after = _batches(folder)
    assert not np.array_equal(after["batch_000000.npz"][0], before["batch_000000.npz"][0])
    assert json.loads(out.read_text())["sampling"]["options_from"]["temperature"] == "option"
    # more samples in the same folder extend it: the first batch is kept
    assert main([*base, "--temperature", "0.5", "--seed", "1", "--num-samples", "6"]) == 0
    assert np.array_equal(_batches(folder)["batch_000000.npz"][0], after["batch_000000.npz"][0])


def test_option_errors_are_one_line_and_name_the_option(prior_run, offline, tmp_path, capsys):
    prior, tokenizer = str(prior_run / "prior"), str(prior_run)
    out = str(tmp_path / "x.json")
    cases = [
        ([prior, "--num-samples", "1"], "--num-samples: must be at least 2"),
        ([prior, "--top-p", "1.5"], "--top-p: must be in (0, 1], got 1.5"),
        ([prior, "--cfg-scale", "-1"], "--cfg-scale: must be a finite number >= 0"),
        ([prior, "--max-images", "4"], "--max-images: evaluates a tokenizer, but"),
        ([tokenizer, "--num-samples", "4"], "--num-samples: samples a prior, but"),
        ([tokenizer, "--fresh"], "--fresh: samples a prior, but"),
    ]
    for argv, message in cases:
        assert main(["eval", *argv, "--out", out]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    assert not (tmp_path / "x_samples").exists()


def test_compare_refuses_mixing_tokenizer_and_prior_reports(prior_run, offline, tmp_path, capsys):
    gen = tmp_path / "gen.json"
    report = run_generation_eval(prior_run / "prior", out=gen, num_samples=2, batch_size=2, progress=False)
    assert report["sampling"]["labels"] == "sample i has class i mod 3"
    tok = tmp_path / "tok.json"
    tok.write_text(json.dumps({"format": "vqtk-eval-report-1", "metrics": {}}))
    assert main(["eval", "--compare", str(gen), str(tok)]) == 2
    assert "compare reports of one kind" in capsys.readouterr().err


def test_an_unconditional_prior_is_sampled_without_labels(prior_run, offline, tmp_path):
    assert main(["run", str(prior_run.parent / "tiny.toml"), "--out", str(tmp_path / "uncond"), "--stage", "2",
                 "--tokenizer", str(prior_run), "--no-progress", "prior.num_classes=0", "data.class_labels=false",
                 "prior_train.steps=1"]) == 0
    report = run_generation_eval(tmp_path / "uncond" / "prior", out=tmp_path / "u.json", num_samples=2,
                                 batch_size=2, progress=False)
    assert report["sampling"]["labels"] == "unconditional" and report["sampling"]["per_class"] is None
    assert report["model"]["num_classes"] == 0
    assert _batches(tmp_path / "u_samples")["batch_000000.npz"][1].tolist() == [-1, -1]


def test_balanced_labels_and_batch_seeds():
    assert balanced_labels(4, 5, 3).tolist() == [1, 2, 0, 1, 2]
    assert balanced_labels(0, 4, 0) is None
    seeds = {batch_seed(s, k) for s in range(3) for k in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    assert batch_seed(0, 5) == batch_seed(0, 5) and batch_seed(-1, 0) == batch_seed(2**64 - 1, 0)


def test_is_logits_are_torch_fidelitys_logits_unbiased_of_the_same_forward(weights):  # noqa: F811
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    images = torch.rand(2, 3, 16, 16) * 2 - 1
    ours = fid.FidInception(weights)
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(weights))
    pool3, logits = theirs(fid.to_uint8(images))
    features = ours(images)
    assert torch.equal(features, pool3) and torch.allclose(ours.logits(features), logits, rtol=1e-5, atol=1e-5)
    many = torch.randn(40, 1008)
    mean, std = fid.inception_score(many)
    assert mean > 1 and std >= 0
    with pytest.raises(ValueError, match="needs at least 10 images, got 4"):
        fid.inception_score(many[:4])
