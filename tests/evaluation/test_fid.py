"""FID through torch-fidelity's real Inception (generated weights), statistics files, ``vqtk fid-stats``.

The extractor is torch-fidelity's own ``FeatureExtractorInceptionV3``, loaded
from a weight file that has exactly the names and shapes of the real
``weights-inception-2015-12-05-6726825d.pth`` (taken from the module's own
structure) with random values: the whole pipeline runs, nothing is downloaded,
and the numbers mean nothing beyond these tests.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vqtk.cli import main
from vqtk.errors import VqtkError
from vqtk.evaluation import fid
from vqtk.evaluation.fid_stats import FidStatistics, compute_statistics
from vqtk.evaluation.metrics import Unavailable
from vqtk.evaluation.run import run_evaluation


def _inception_state() -> dict[str, torch.Tensor]:
    """Random tensors with the names and shapes of torch-fidelity's Inception weight file.

    torch-fidelity's constructor always loads weights (a path, or else a download);
    the structure is read from a meta-device instance whose weight loading is
    skipped (its download function returns nothing, ``load_state_dict`` does
    nothing). Like the real file (converted from TensorFlow), there is no
    ``num_batches_tracked``.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with pytest.MonkeyPatch.context() as mp, torch.device("meta"):
        mp.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        structure = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    shapes = {k: v.shape for k, v in structure.items() if not k.endswith("num_batches_tracked")}
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in shapes.items():
        if name.endswith(("running_var", "bn.weight")):
            state[name] = torch.ones(shape)
        elif name.endswith(("running_mean", "bn.bias")):
            state[name] = torch.zeros(shape)
        elif len(shape) == 4:  # He initialisation keeps activations alive through the 90-odd layers
            state[name] = torch.randn(shape, generator=gen) * math.sqrt(2 / shape[1:].numel())
        else:
            state[name] = torch.randn(shape, generator=gen) * 0.01
    return state


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / fid.INCEPTION_FILE
    torch.save(_inception_state(), path)
    return path


@pytest.fixture(scope="session")
def inception(weights):
    return fid.FidInception(weights)


def _smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def _image_folder(folder, n=4, seed=0):
    folder.mkdir(parents=True)
    for i, image in enumerate(_smooth_images(n, 24, seed)):
        pixels = fid.to_uint8(image).permute(1, 2, 0).numpy()
        Image.fromarray(pixels[:, 2:22]).save(folder / f"{i}.png")  # 24x20: resize + centre crop happen
    return folder


def test_the_extractor_is_torch_fidelitys_inception_loaded_from_the_file(inception, weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    assert isinstance(inception.net, FeatureExtractorInceptionV3) and inception.net.features_list == ["2048"]
    assert inception.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    x = _smooth_images(2, 32, seed=1)
    features = inception(x)
    assert features.shape == (2, 2048) and features.dtype == torch.float32 and features.abs().sum() > 0
    assert torch.equal(inception(x[:, :1]), inception(x[:, :1].expand(-1, 3, -1, -1)))  # grey: channel repeated
    described = inception.describe()
    assert described["implementation"].startswith("torch-fidelity 0.4") and "FeatureExtractorInceptionV3" in \
        described["implementation"]
    assert described["protocol"] == fid.PROTOCOL and described["weights_sha256"] == inception.sha256
    assert "'2048'" in described["feature_layer"] and "TensorFlow-1.x bilinear" in described["resize"]


def test_uint8_quantisation_recovers_8_bit_pixels_and_rounds_to_nearest():
    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(fid.to_uint8(levels.float() / 127.5 - 1), levels)
    x = torch.tensor([-2.0, -1.0, 1.0, 3.0, 0.6 / 127.5 - 1, 0.4 / 127.5 - 1, 254.6 / 127.5 - 1])
    assert fid.to_uint8(x).tolist() == [0, 0, 255, 255, 1, 0, 255]  # nearest level, clamped


def test_identical_sets_give_zero_and_shifted_sets_a_clearly_larger_fid(inception):
    images = _smooth_images(4, 32, seed=0)
    whole = compute_statistics([images], inception)
    pieces = compute_statistics(iter([images[:1], images[1:]]), inception)  # any batching
    assert whole.count == pieces.count == 4
    same = whole.fid(pieces)
    assert 0 <= same < 1e-3
    brighter = whole.fid(compute_statistics([(images + 0.3).clamp(-1, 1)], inception))
    assert brighter > 0.1 and brighter > 1000 * same
    with pytest.raises(VqtkError, match="at least 2 images, got 1"):
        compute_statistics([images[:1]], inception)


def test_frechet_distance_agrees_with_torch_fidelitys_formula():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    gen = np.random.default_rng(0)
    a, b = gen.normal(size=(40, 16)), gen.normal(size=(50, 16)) @ gen.normal(size=(16, 16)) * 0.5 + 0.3
    stats = [{"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)} for x in (a, b)]
    theirs = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    ours = fid.frechet_distance(*(torch.from_numpy(s[k]) for s in stats for k in ("mu", "sigma")))
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_statistics_file_round_trip_and_refusals(inception, tmp_path):
    stats = compute_statistics([_smooth_images(4, 16, seed=2)], inception, resolution=16, data="generated")
    path = stats.save(tmp_path / "ref.npz")
    with np.load(path, allow_pickle=False) as raw:
        assert set(raw.files) == {"mu", "sigma", "count", "meta"} and int(raw["count"]) == 4
        meta = json.loads(str(raw["meta"]))
    assert meta["format"] == "vqtk-fid-stats-1" and meta["protocol"] == fid.PROTOCOL and meta["images"] == 4
    assert meta["weights_sha256"] == inception.sha256 and meta["resolution"] == 16
    back = FidStatistics.load(path, inception)
    assert torch.equal(back.mu, stats.mu) and torch.equal(back.sigma, stats.sigma) and back.count == 4
    assert back.meta == {**stats.meta, "format": "vqtk-fid-stats-1", "images": 4}
    assert back.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    def rewrite(name, **changes):
        with np.load(path, allow_pickle=False) as raw:
            arrays = {k: raw[k] for k in raw.files}
        arrays["meta"] = np.array(json.dumps({**meta, **changes}))
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    clean = rewrite("clean.npz", protocol="clean-fid/pil-bicubic-299", implementation="clean-fid 0.1.35")
    with pytest.raises(VqtkError, match=r"^--ref-stats: .*clean\.npz was made with another FID protocol "
                                        r"\('clean-fid/pil-bicubic-299', by clean-fid 0\.1\.35\)"):
        FidStatistics.load(clean)
    other = rewrite("other.npz", weights_sha256="0" * 64)
    FidStatistics.load(other)  # the protocol matches; the weights are checked against an extractor
    with pytest.raises(VqtkError, match="was made with other Inception weights"):
        FidStatistics.load(other, inception)
    np.savez(tmp_path / "pytorch_fid.npz", mu=stats.mu.numpy(), sigma=stats.sigma.numpy())
    with pytest.raises(VqtkError, match="has no vqtk metadata"):
        FidStatistics.load(tmp_path / "pytorch_fid.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(VqtkError, match=r"junk\.npz is not a FID statistics \.npz"):
        FidStatistics.load(tmp_path / "junk.npz")


def test_eval_with_ref_stats_from_fid_stats_equals_eval_against_its_own_images(env, weights, tmp_path, capsys):
    folder = _image_folder(tmp_path / "images")
    stats_file = tmp_path / "ref" / "stats.npz"
    assert main(["fid-stats", str(folder), "--out", str(stats_file), "--resolution", "16", "--batch-size", "3",
                 "--inception-weights", str(weights)]) == 0
    assert f"4 images of {folder.resolve()} at 16 px" in capsys.readouterr().out
    saved = FidStatistics.load(stats_file)
    assert saved.count == 4 and saved.meta["resolution"] == 16 and saved.meta["folder"] == str(folder.resolve())

    own = run_evaluation(env, out=tmp_path / "own.json", data_path=str(folder), inception_weights=str(weights))
    ref = run_evaluation(env, out=tmp_path / "ref.json", data_path=str(folder), inception_weights=str(weights),
                         ref_stats=str(stats_file), batch_size=2)
    a, b = own["metrics"]["rfid"], ref["metrics"]["rfid"]
    assert a["available"] and b["available"] and a["images"] == b["images"] == 4
    assert b["value"] == pytest.approx(a["value"], rel=1e-6, abs=1e-9) and a["value"] > 0
    assert a["reference"] == {"source": "the evaluated images", "images": 4}
    assert b["reference"]["source"] == "statistics file" and b["reference"]["path"] == str(stats_file.resolve())
    assert b["reference"]["sha256"] == hashlib.sha256(stats_file.read_bytes()).hexdigest()
    assert b["reference"]["images"] == 4 and b["reference"]["resolution"] == 16
    assert a["implementation"].startswith("torch-fidelity 0.4") and a["protocol"] == fid.PROTOCOL
    assert a["weights"] == {"path": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert "'2048'" in a["feature_layer"] and "uint8" in a["quantize"] and "299x299" in a["resize"]
    assert "rank-deficient" in a["warning"] and "comparable" in a["note"]


def test_eval_refuses_a_stats_file_of_another_protocol_in_one_line(env, inception, weights, tmp_path, capsys):
    stats = compute_statistics([_smooth_images(3, 16, seed=3)], inception, resolution=16)
    stats.meta["protocol"] = "torchvision-inception/pool3/bilinear-299"
    path = stats.save(tmp_path / "tv.npz")
    out = tmp_path / "r.json"
    code = main(["eval", str(env), "--out", str(out), "--ref-stats", str(path), "--inception-weights", str(weights)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and not out.exists()
    assert err[0].startswith(f"vqtk: error: --ref-stats: {path.resolve()} was made with another FID protocol")
    assert main(["eval", str(env), "--out", str(out), "--ref-stats", str(tmp_path / "missing.npz")]) == 2
    assert "--ref-stats: no such file" in capsys.readouterr().err


def test_missing_weights_or_package_make_rfid_unavailable_with_the_fix(env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VQTK_OFFLINE", "1")
    report = run_evaluation(env, out=tmp_path / "r.json")
    rfid = report["metrics"]["rfid"]
    assert rfid == {"available": False, "reason": rfid["reason"]}
    assert fid.INCEPTION_FILE in rfid["reason"] and "vqtk download fid-inception" in rfid["reason"]
    assert "--inception-weights" in rfid["reason"]
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["rfid"] == rfid

    assert main(["fid-stats", str(_image_folder(tmp_path / "images")), "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vqtk download fid-inception" in err[0] and not (tmp_path / "s.npz").exists()

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch_fidelity" else real_find_spec(name, *a))
    missing = fid.load_fid_inception()
    assert isinstance(missing, Unavailable) and "pip install torch-fidelity" in missing.reason


class _Payload:
    """Unpickling this would construct an arbitrary object: a safe load refuses it."""


def test_wrong_or_unsafe_weight_files_are_one_line_errors(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(VqtkError, match=f"wrong.pth: is not torch-fidelity's {fid.INCEPTION_FILE} "):
        fid.FidInception(wrong)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"conv.weight": _Payload()}, unsafe)
    with pytest.raises(VqtkError, match=r"unsafe.pth: cannot read it as Inception weights \(UnpicklingError"):
        fid.FidInception(unsafe)


def test_fid_stats_checks_its_options_before_loading_anything(tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    cases = [
        ([str(tmp_path / "nope"), "--out", "s.npz"], "fid-stats: no such folder"),
        ([str(folder), "--out", "s.json"], "--out: the statistics file is .npz"),
        ([str(folder), "--out", "s.npz", "--resolution", "0"], "--resolution: must be > 0, got 0"),
        ([str(folder), "--out", "s.npz", "--max-images", "1"], "--max-images: FID statistics need at least 2"),
        ([str(folder), "--out", "s.npz", "--inception-weights", "x.pth"], "--inception-weights: no such file"),
    ]
    for argv, message in cases:
        assert main(["fid-stats", *argv]) == 2
        assert message in capsys.readouterr().err


def test_report_warns_when_the_reference_file_has_another_resolution(tmp_path):
    from vqtk.evaluation.report import rfid_entry

    def stats(count, **meta):
        return FidStatistics(mu=torch.zeros(2048, dtype=torch.float64), sigma=torch.eye(2048, dtype=torch.float64),
                             count=count, meta=meta)

    described = {"implementation": "x", "feature_layer": "2048", "protocol": fid.PROTOCOL, "quantize": "q",
                 "resize": "r", "weights": "w.pth", "weights_sha256": "ab"}
    reference = stats(50_000, resolution=256)
    reference.path, reference.sha256 = tmp_path / "ref.npz", "cd"
    entry = rfid_entry({"value": 1.5, "reference": reference, "reconstructions": stats(3000), "inception": described},
                       resolution=128)
    assert entry["warning"] == "the reference statistics are of 256 px images, the evaluated images are 128 px"
    assert entry["reference"]["images"] == 50_000 and entry["images"] == 3000 and entry["weights"]["sha256"] == "ab"
    same = rfid_entry({"value": 1.5, "reference": reference, "reconstructions": stats(3000), "inception": described},
                      resolution=256)
    assert "warning" not in same
