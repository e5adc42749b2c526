"""WebDataset shards: the writer (`vqtk shards`), the streamed `shards` source, and the batch stream over it.

Test images are solid colours whose red and green channels encode the sample's
number, so every item says which sample it came from whatever the crop or flip.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import torch
from data_images import noise, solid, vqtk_warnings
from PIL import Image

from vqtk.build import build_data
from vqtk.cli import main
from vqtk.errors import VqtkError
from vqtk.interfaces.data import StreamingDataset
from vqtk.io.shards import CLASSES_FILE, SIZES_FILE, iter_tar, write_shards
from vqtk.recipe import load_recipe
from vqtk.train.data_stream import BatchStream, StreamState
from vqtk_builtins.data import shard_reading as shards_module
from vqtk_builtins.data.shards import Shards, buffer_order

pytestmark = pytest.mark.usefixtures("one_thread")


def numbered(folder: Path, n: int, *, classes: int = 0, size=(16, 16)) -> Path:
    """``n`` solid images; image ``i`` has red ``i % 256``, green ``i // 256`` (in class ``i % classes``)."""
    for i in range(n):
        sub = f"c{i % classes}/" if classes else ""
        solid(folder / f"{sub}img{i:04d}.png", (i % 256, i // 256, 100), size=size)
    return folder


def ident(x: torch.Tensor) -> int:
    """The sample number a solid item encodes."""
    rgb = ((x[:, 0, 0] + 1) * 127.5).round().long().tolist()
    return rgb[0] + 256 * rgb[1]


@pytest.fixture
def shard_dir(tmp_path):
    """32 numbered images in 8 shards of 4."""
    out = tmp_path / "shards"
    write_shards(numbered(tmp_path / "src", 32), out, shard_size=4)
    return out


def source(shard_dir: Path, **kw) -> Shards:
    args = dict(shards=(str(shard_dir / "shard-{000000..000007}.tar"),), sizes=str(shard_dir / SIZES_FILE),
                resolution=16, eval_samples=0, shuffle_buffer=3, streams=2)
    return Shards(**{**args, **kw})


def batches(stream: BatchStream, n: int) -> tuple[list, list[StreamState]]:
    """The first ``n`` batches and the stream state after each."""
    out, states = [], []
    for batch in stream:
        out.append(batch)
        states.append(StreamState(stream.state.epoch, stream.state.position))
        if len(out) == n:
            break
    return out, states


# -- the writer -----------------------------------------------------------------------


def test_writer_round_trip_images_labels_keys_and_sizes(tmp_path, caplog):
    src = numbered(tmp_path / "src", 10, classes=2)
    (src / "c1" / "broken.png").write_bytes(b"not a png")
    solid(src / "loose.png")  # not in a class folder: left out
    caplog.set_level(logging.WARNING, logger="vqtk")
    report = write_shards(src, tmp_path / "out", shard_size=4, class_labels=True)
    assert report.shards == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert report.counts == [4, 4, 2] and report.skipped == 1 and report.classes == ["c0", "c1"]
    assert report.pattern == str(tmp_path / "out" / "shard-{000000..000002}.tar")
    assert json.loads((tmp_path / "out" / SIZES_FILE).read_text()) == dict(zip(report.shards, report.counts))
    assert (tmp_path / "out" / CLASSES_FILE).read_text() == "c0\nc1\n"
    warned = vqtk_warnings(caplog)
    assert any("skipping unreadable image" in w and "broken.png" in w for w in warned)
    samples = [s for name in report.shards for s in iter_tar(str(tmp_path / "out" / name))]
    files = sorted(p.relative_to(src).as_posix() for p in src.glob("c*/img*.png"))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(10)]
    assert [json.loads(s["json"])["path"] for s in samples] == files  # sorted order
    assert [int(s["cls"]) for s in samples] == [int(f[1]) for f in files]
    assert all(s["png"] == (src / f).read_bytes() for s, f in zip(samples, files))  # stored as they are
    # deterministic: the same folder gives the same bytes
    write_shards(src, tmp_path / "again", shard_size=4, class_labels=True)
    assert all((tmp_path / "out" / n).read_bytes() == (tmp_path / "again" / n).read_bytes() for n in report.shards)


def test_writer_max_bytes_resolution_and_refusals(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        noise(src / f"{i}.png", seed=i, size=(64, 48))
    report = write_shards(src, tmp_path / "out", shard_size=100, max_bytes=1, resolution=12, workers=2)
    assert report.counts == [1, 1, 1, 1]  # every image passes one byte
    for name in report.shards:
        (sample,) = iter_tar(str(tmp_path / "out" / name))
        with Image.open(io.BytesIO(sample["png"])) as im:
            assert im.size == (16, 12)  # shorter side scaled down to 12
    with pytest.raises(VqtkError, match="already holds shards"):
        write_shards(src, tmp_path / "out", shard_size=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VqtkError, match="no images found"):
        write_shards(tmp_path / "empty", tmp_path / "o2", shard_size=4)


def test_shards_command_prints_a_recipe_table(tmp_path, capsys, builtins_registry, use_registry):
    use_registry(builtins_registry)
    src = numbered(tmp_path / "src", 6, classes=3)
    out = tmp_path / "out"
    assert main(["shards", str(src), "--out", str(out), "--shard-size", "2", "--class-labels", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("wrote 6 images (") and f"in 3 shards to {out}" in text
    assert f'"{out}/shard-{{000000..000002}}.tar"' in text and f'sizes = "{out}/{SIZES_FILE}"' in text
    assert "num_classes = 3" in text and "class_labels = true" in text
    assert 'type = "shards"' in text  # the installed ShardDataSource, found by its declared kind
    assert main(["shards", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert main(["shards", str(src), "--out", str(tmp_path / "x"), "--shard-size", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"vqtk: error: {tmp_path / 'nope'}: no such folder", "vqtk: error: --shard-size: must be > 0, got 0"]


# -- the source -----------------------------------------------------------------------


def test_items_are_resolution_sized_in_range_with_labels(tmp_path):
    src = tmp_path / "src"
    for i in range(6):
        noise(src / f"c{i % 2}" / f"{i}.png", seed=i, size=(40, 30))
    write_shards(src, tmp_path / "out", shard_size=2, class_labels=True)
    data = Shards(shards=(str(tmp_path / "out" / "shard-{000000..000002}.tar"),), resolution=12, eval_samples=2,
                  class_labels=True, num_classes=2, streams=1)  # no sizes: counted from the headers
    assert isinstance(data.train_set(), StreamingDataset) and data.num_classes == 2
    items = list(data.train_set().stream(seed=0, epoch=0, index=0, num_streams=1))
    assert len(items) == len(data.train_set()) == 4 and len(data.eval_set()) == 2
    for x, label in [*items, *(data.eval_set()[i] for i in range(2)), data.train_set()[3]]:
        assert x.shape == (3, 12, 12) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
        assert label in (0, 1)
    assert "3 shards, 4 train, 2 eval, 12px random crop" in data.describe()


def test_eval_split_first_samples_or_separate_shards(shard_dir, tmp_path):
    data = source(shard_dir, eval_samples=6, streams=1, shuffle_buffer=1)
    held = [ident(data.eval_set()[i]) for i in range(len(data.eval_set()))]
    trained = [ident(x) for x in data.train_set().stream(seed=0, epoch=0, index=0, num_streams=1)]
    assert held == [0, 1, 2, 3, 4, 5] and sorted(trained) == list(range(6, 32))
    write_shards(numbered(tmp_path / "evsrc", 3), tmp_path / "ev", shard_size=8)
    separate = source(shard_dir, eval_shards=(str(tmp_path / "ev" / "shard-000000.tar"),))
    assert len(separate.eval_set()) == 3 and len(separate.train_set()) == 32
    with pytest.raises(VqtkError, match="^data.eval_samples: holding out 32 samples leaves none"):
        source(shard_dir, eval_samples=32).train_set()


def test_recipe_errors_are_one_line(shard_dir, builtins_registry, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('extends = "%s"\n' % (Path(__file__).parents[2] / "recipes" / "small_f8.toml"))
    ok, _ = load_recipe(recipe, ["data.type=\"shards\"", f'data.shards=["{shard_dir}/shard-{{000000..000007}}.tar"]',
                                 "data.resolution=16", "data.eval_samples=4"], builtins_registry)
    assert build_data(ok, builtins_registry).train_set().stream_lengths(seed=0, epoch=0, num_streams=7)
    with pytest.raises(VqtkError, match=r"^data.shards: no such shard file: .*shard-000008.tar \(and 1 more of the 10 it names\)$"):
        source(shard_dir, shards=(str(shard_dir / "shard-{000000..000009}.tar"),))
    with pytest.raises(VqtkError, match="^data.num_classes: needed with data.class_labels"):
        source(shard_dir, class_labels=True)
    with pytest.raises(VqtkError, match=r"^data.shards: 8 training shards cannot feed 16 streams"):
        source(shard_dir).train_set().stream_lengths(seed=0, epoch=0, num_streams=16)
    with pytest.raises(VqtkError, match="^data.shards: .* listed twice"):
        source(shard_dir, shards=(str(shard_dir / "shard-000000.tar"),) * 2)


def test_buffer_order_is_a_bounded_permutation():
    import random

    order = buffer_order(50, 5, random.Random(0)).tolist()
    assert sorted(order) == list(range(50)) and order != list(range(50))
    assert all(i <= j + 4 for j, i in enumerate(order))  # never more than size - 1 ahead
    assert buffer_order(7, 1, random.Random(0)).tolist() == list(range(7))


def test_unreadable_sample_is_replaced_and_counted(tmp_path, caplog):
    src = numbered(tmp_path / "src", 8)
    write_shards(src, tmp_path / "out", shard_size=4)
    data = Shards(shards=(str(tmp_path / "out" / "shard-{000000..000001}.tar"),), resolution=16, eval_samples=0,
                  sizes=str(tmp_path / "out" / SIZES_FILE), shuffle_buffer=1, streams=1)
    spans = data.train_set().assignment(0, 0, 1)[0]
    inputs = [4 * int(s.path[-5]) + k for s in spans for k in range(4)]  # sample numbers in stream order
    bad = [inputs[1], inputs[-1]]
    for n in bad:  # corrupt their images in place (same size, so the tars stay valid)
        path = tmp_path / "out" / f"shard-00000{n // 4}.tar"
        png = (src / f"img{n:04d}.png").read_bytes()
        path.write_bytes(path.read_bytes().replace(png, b"\0" * len(png)))
    caplog.set_level(logging.WARNING, logger="vqtk")
    got = [ident(x) for x in data.train_set().stream(seed=0, epoch=0, index=0, num_streams=1)]
    # the next readable one stands in; for the stream's last, the next in shard order (wrapping around)
    assert got == [inputs[0], inputs[2], *inputs[2:-1], inputs[0]]
    assert data.skipped_files() == 2
    warned = [w for w in vqtk_warnings(caplog) if w.startswith("data: skipping unreadable sample")]
    assert len(warned) == 2 and all(w.endswith("(UnidentifiedImageError: .png is no image Pillow can read)")
                                    for w in warned)


def test_truncated_shard_loses_only_its_tail_with_one_warning(tmp_path, caplog):
    write_shards(numbered(tmp_path / "src", 8, size=(64, 64)), tmp_path / "out", shard_size=4)
    path = tmp_path / "out" / "shard-000001.tar"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # sizes.json still says 4
    data = Shards(shards=(str(tmp_path / "out" / "shard-{000000..000001}.tar"),), resolution=16, eval_samples=0,
                  sizes=str(tmp_path / "out" / SIZES_FILE), shuffle_buffer=1, streams=1)
    caplog.set_level(logging.WARNING, logger="vqtk")
    got = [ident(x) for x in data.train_set().stream(seed=0, epoch=0, index=0, num_streams=1)]
    assert len(got) == 8 and set(got) < set(range(8)) and set(range(4)) <= set(got)
    warned = vqtk_warnings(caplog)  # the cut sample (if its name survived), then the lost tail: one line
    assert [w for w in warned if w.startswith(f"data: shard {path}: samples from #")] == [warned[-1]]
    assert not [w for w in warned if "skipping unreadable sample #" in w]
    assert data.skipped_files() == 8 - len(set(got))


# -- the batch stream over shards -------------------------------------------------------


def test_two_ranks_two_workers_read_disjoint_shards_and_every_sample_once(shard_dir):
    data = source(shard_dir)  # 8 shards x 4; 2 ranks x 2 streams: 2 shards (8 samples) per stream
    seen = {}
    for rank in range(2):
        stream = BatchStream(data.train_set(), batch_size=2, seed=5, num_workers=2, rank=rank, world_size=2)
        got, states = batches(stream, 8)  # one epoch: 2 streams x 4 batches
        assert states[-1] == StreamState(0, 32)
        for i, batch in enumerate(got):
            seen.setdefault((rank, i % 2), []).extend(ident(x) for x in batch)  # (rank, stream = worker)
    ids = sorted(i for group in seen.values() for i in group)
    assert ids == list(range(32))  # every sample once
    shards = {key: {i // 4 for i in group} for key, group in seen.items()}
    assert all(len(s) == 2 for s in shards.values())
    assert len(set().union(*shards.values())) == 8  # no shard read by two (rank, worker) pairs


def test_order_is_fixed_by_seed_and_epoch(shard_dir):
    def order(seed: int, n: int = 32) -> list[int]:  # two epochs of 16 batches
        got, _ = batches(BatchStream(source(shard_dir).train_set(), batch_size=2, seed=seed), n)
        return [ident(x) for b in got for x in b]

    first = order(1)
    assert first == order(1)  # same seed: same order
    assert sorted(first[:32]) == list(range(32))  # one epoch, every sample
    assert first[:32] != first[32:] and sorted(first[32:]) == list(range(32))  # epoch 1: new order
    assert order(2) != first


@pytest.mark.parametrize("cut", [3, 7, 11])
def test_resume_gives_exactly_the_remaining_batches(tmp_path, cut):
    src = tmp_path / "src"
    for i in range(24):
        noise(src / f"{i:03d}.png", seed=i, size=(24, 20))
    write_shards(src, tmp_path / "out", shard_size=3)

    def stream(workers: int, state=None) -> BatchStream:
        data = Shards(shards=(str(tmp_path / "out" / "shard-{000000..000007}.tar"),), resolution=12, eval_samples=0,
                      resize=False, shuffle_buffer=4, streams=2)  # random crops and flips: seeded per item
        return BatchStream(data.train_set(), batch_size=2, seed=3, num_workers=workers, rank=1, world_size=2,
                           state=state)

    whole, states = batches(stream(0), 14)  # 6 batches per epoch for this rank: crosses two epochs
    resumed, _ = batches(stream(2 if cut == 7 else 0, StreamState(states[cut - 1].epoch, states[cut - 1].position)),
                         14 - cut)  # a different worker count gives the same batches
    assert len(resumed) == 14 - cut
    for a, b in zip(whole[cut:], resumed):
        assert torch.equal(a, b)


def test_resume_skips_without_decoding_and_leaves_read_shards_unopened(shard_dir, monkeypatch):
    data = source(shard_dir, shuffle_buffer=2, streams=1)
    ds = data.train_set()
    spans = ds.assignment(0, 0, 1)[0]
    whole = [ident(x) for x in ds.stream(seed=0, epoch=0, index=0, num_streams=1)]
    decodes, opened = [], []
    real_image, real_iter = shards_module.SampleDecoder.image, shards_module.iter_tar
    monkeypatch.setattr(shards_module.SampleDecoder, "image", lambda self, s: decodes.append(s["__key__"]) or real_image(self, s))
    monkeypatch.setattr(shards_module, "iter_tar", lambda path, suffixes: opened.append(path) or real_iter(path, suffixes))
    rest = [ident(x) for x in ds.stream(seed=0, epoch=0, index=0, num_streams=1, start=21)]
    assert rest == whole[21:]
    assert len(decodes) == 32 - 21  # only what it gives out is decoded
    order = buffer_order(32, 2, shards_module._rng("buffer", 0, 0, 0)).tolist()
    first_needed = min(order[21:])
    assert opened == [s.path for s in spans[first_needed // 4:]]  # earlier shards are not even opened


def test_worker_warnings_reach_the_main_process_once(tmp_path, caplog):
    src = numbered(tmp_path / "src", 8)
    write_shards(src, tmp_path / "out", shard_size=2)
    path = tmp_path / "out" / "shard-000001.tar"
    png = (src / "img0002.png").read_bytes()
    path.write_bytes(path.read_bytes().replace(png, b"\0" * len(png)))
    data = Shards(shards=(str(tmp_path / "out" / "shard-{000000..000003}.tar"),), resolution=16, eval_samples=0,
                  streams=2)
    caplog.set_level(logging.WARNING, logger="vqtk")
    got, _ = batches(BatchStream(data.train_set(), batch_size=2, seed=0, num_workers=2), 8)  # two epochs
    assert not [b for b in got if 2 in (ident(x) for x in b)]
    assert [w for w in vqtk_warnings(caplog) if "skipping" in w] == [
        f"data: skipping unreadable sample 000000002 in {path} (UnidentifiedImageError: .png is no image Pillow "
        "can read)"]  # logged in a worker process of each epoch, shown once


def test_auto_workers_leave_a_core_per_process_and_none_on_cpu(monkeypatch):
    from vqtk.train import data_stream

    monkeypatch.setattr(data_stream.os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert data_stream.auto_workers(1) == 4 and data_stream.auto_workers(4) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert data_stream.auto_workers(16) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert data_stream.auto_workers(1) == 0  # on CPU the cores are the model's
    assert BatchStream(torch.zeros(4, 3, 2, 2), batch_size=2, seed=0, num_workers=None).num_workers == 0
