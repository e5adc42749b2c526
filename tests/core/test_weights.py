"""vqtk.io.weights and `vqtk download`: fetched on first use, verified, locked, never half-written, offline on request.

Every download comes from an HTTP server inside the test (127.0.0.1, generated files).
"""

from __future__ import annotations

import collections
import hashlib
import http.server
import io
import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from vqtk.cli import main
from vqtk.errors import MissingFileError, VqtkError
from vqtk.evaluation import fid
from vqtk.io import weights
from vqtk.io.weights import WeightFile

WAIT_S = 60  # bound on every wait for a child process or the server (a loaded machine is slow to import torch)


class Server:
    """Serves ``routes[path] = (mode, body)``; counts requests. Modes: ok, slow, truncate, stall, 404, 500."""

    def __init__(self):
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.requests: collections.Counter = collections.Counter()
        self.half_sent = threading.Event()
        self.release = threading.Event()
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                state.requests[self.path] += 1
                mode, body = state.routes.get(self.path, ("404", b""))
                if mode in ("404", "500"):
                    self.send_error(int(mode))
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                half = len(body) // 2
                if mode == "ok":
                    self.wfile.write(body)
                elif mode == "slow":  # ~0.8 s: long enough for a second process to meet the lock
                    for i in range(8):
                        self.wfile.write(body[i * len(body) // 8:(i + 1) * len(body) // 8])
                        self.wfile.flush()
                        time.sleep(0.1)
                elif mode == "truncate":  # half the bytes promised, then the connection closes
                    self.wfile.write(body[:half])
                elif mode == "stall":  # half the bytes, then nothing until the test releases it
                    self.wfile.write(body[:half])
                    self.wfile.flush()
                    state.half_sent.set()
                    state.release.wait(WAIT_S)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def add(self, body: bytes, *, mode: str = "ok", key: str = "test-w", stem: str = "w") -> WeightFile:
        """Serve ``body`` under a torch-hub style name (``stem-<sha256 prefix>.pth``); its record."""
        prefix = hashlib.sha256(body).hexdigest()[:8]
        name = f"{stem}-{prefix}.pth"
        self.routes["/" + name] = (mode, body)
        return WeightFile(key, name, self.url(name), prefix, f"test file {stem}")

    def count(self, record: WeightFile) -> int:
        return self.requests["/" + record.file]

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch's hub cache under a fresh $TORCH_HOME; no $VQTK_WEIGHTS_DIR; network allowed (local server only)."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("VQTK_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("VQTK_OFFLINE", "0")
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def payload(n: int = 64 * 1024, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def leftovers(folder: Path) -> list[str]:
    """Files in ``folder`` other than the (empty) lock files filelock keeps."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message, message
    return message


def test_the_test_environment_is_offline_by_default():
    assert os.environ["VQTK_OFFLINE"] == "1" and weights.is_offline()  # set by tests/conftest.py


def test_fetch_downloads_into_the_hub_cache_verified_and_reuses_it(server, hub):
    body = payload()
    record = server.add(body)
    path = weights.fetch(record)
    assert path == hub / record.file and path.read_bytes() == body
    assert server.count(record) == 1 and leftovers(hub) == [record.file]
    assert weights.fetch(record) == path and server.count(record) == 1


def test_a_valid_file_already_there_is_not_fetched_and_is_hashed_once(server, hub, monkeypatch):
    body = payload()
    record = server.add(body)
    hub.mkdir(parents=True)
    (hub / record.file).write_bytes(body)
    hashed = []
    real_sha256 = weights.file_sha256
    monkeypatch.setattr(weights, "file_sha256", lambda p: hashed.append(p) or real_sha256(p))
    assert weights.fetch(record) == hub / record.file
    assert weights.fetch(record) == hub / record.file
    assert server.count(record) == 0 and len(hashed) == 1


def test_corrupt_or_truncated_cached_file_is_named_never_used_nor_replaced(server, hub):
    body = payload()
    record = server.add(body)
    hub.mkdir(parents=True)
    cached = hub / record.file
    cached.write_bytes(body)
    assert weights.fetch(record) == cached  # verified once: a later change must still be caught
    for bad in (body[: len(body) // 2], b"x" + body[1:]):
        cached.write_bytes(bad)
        os.utime(cached, ns=(time.time_ns(), time.time_ns() + 1))
        with pytest.raises(VqtkError) as err:
            weights.fetch(record)
        message = one_line(err)
        assert not isinstance(err.value, MissingFileError)
        assert str(cached) in message and "truncated or corrupt" in message
        assert f"rm '{cached}'" in message and "`vqtk download test-w`" in message
        assert cached.read_bytes() == bad and server.count(record) == 0
    sized = WeightFile(record.key, record.file, record.url, record.sha256_prefix, "sized", size=len(body))
    with pytest.raises(VqtkError, match=rf"{len(body) - 1} bytes, expected {len(body)}"):
        cached.write_bytes(body[:-1])
        weights.fetch(sized)


def test_wrong_hash_is_refused_and_nothing_is_left(server, hub):
    good = server.add(payload())
    record = WeightFile("test-w", good.file, good.url, "00000000", "a file whose hash is not the one served")
    with pytest.raises(VqtkError) as err:
        weights.fetch(record)
    message = one_line(err)
    assert "does not match its SHA-256 prefix 00000000" in message and "nothing was saved" in message
    assert leftovers(hub) == []


def test_truncated_transfer_is_refused_and_nothing_is_left(server, hub):
    record = server.add(payload(), mode="truncate")
    with pytest.raises(VqtkError) as err:
        weights.fetch(record)
    assert "truncated" in one_line(err) or "IncompleteRead" in one_line(err)
    assert server.count(record) == 1 and leftovers(hub) == []


@pytest.mark.parametrize("status", ["404", "500"])
def test_server_errors_are_one_line_naming_the_file_place_and_command(server, hub, status):
    record = server.add(payload(), mode=status)
    with pytest.raises(MissingFileError) as err:
        weights.fetch(record)
    message = one_line(err)
    assert f"HTTP {status}" in message and record.file in message and str(hub) in message
    assert "`vqtk download test-w`" in message and leftovers(hub) == []


def test_unreachable_server_is_a_missing_file(hub, server):
    record = server.add(payload())
    dead = WeightFile("test-w", record.file, "http://127.0.0.1:9/" + record.file, record.sha256_prefix, "x")
    with pytest.raises(MissingFileError, match="failed") as err:
        weights.fetch(dead)
    one_line(err)


def test_offline_names_the_file_the_places_and_vqtk_download(server, hub, monkeypatch, tmp_path):
    monkeypatch.setenv("VQTK_OFFLINE", "1")
    monkeypatch.setenv("VQTK_WEIGHTS_DIR", str(tmp_path / "shared"))
    record = server.add(payload())
    with pytest.raises(MissingFileError) as err:
        weights.fetch(record)
    message = one_line(err)
    assert record.file in message and str(tmp_path / "shared") in message and str(hub) in message
    assert "VQTK_OFFLINE=1" in message and "`vqtk download test-w`" in message
    assert server.count(record) == 0


def test_where_files_go_to_then_vqtk_weights_dir_then_the_hub_cache(server, hub, monkeypatch, tmp_path):
    body = payload()
    record = server.add(body)
    shared = tmp_path / "shared"
    monkeypatch.setenv("VQTK_WEIGHTS_DIR", str(shared))
    assert weights.fetch(record) == shared / record.file  # downloads go to $VQTK_WEIGHTS_DIR
    assert weights.fetch(record, to=tmp_path / "mine") == tmp_path / "mine" / record.file  # to= wins
    other = server.add(payload(seed=1), key="test-v", stem="v")
    hub.mkdir(parents=True)
    (hub / other.file).write_bytes(payload(seed=1))
    assert weights.fetch(other) == hub / other.file  # a verified copy in the hub cache still counts
    assert server.count(other) == 0 and server.count(record) == 2


def test_url_override_from_the_environment(server, hub, monkeypatch):
    good = server.add(payload())
    record = WeightFile("test-w", good.file, "http://127.0.0.1:9/nowhere", good.sha256_prefix, "x")
    monkeypatch.setenv("VQTK_WEIGHTS_URL_TEST_W", good.url)
    assert weights.fetch(record).read_bytes() == payload()


def test_unknown_key_and_unwritable_folder(server, hub, tmp_path):
    with pytest.raises(VqtkError, match="unknown weight file 'nope'; known: lpips-vgg"):
        weights.fetch("nope")
    record = server.add(payload())
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(VqtkError, match="cannot write") as err:
        weights.fetch(record, to=blocker / "sub")
    one_line(err)


def _fetch_in_child(record: WeightFile, to: Path, result: Path, gate: Path | None) -> None:
    """A forked process's fetch; writes ``ok PATH`` or ``interrupted`` to ``result``."""
    try:
        if gate is not None:  # both processes start their fetch together
            Path(f"{gate}.{os.getpid()}.ready").touch()
            wait_for(gate.exists, "the start signal")
        result.write_text(f"ok {weights.fetch(record, to=to, progress=False)}")
    except KeyboardInterrupt:
        result.write_text("interrupted")
        os._exit(130)


def child(record: WeightFile, to: Path, result: Path, gate: Path | None = None) -> multiprocessing.Process:
    """A separate process (forked: no second torch import) fetching ``record`` into ``to``."""
    proc = multiprocessing.get_context("fork").Process(target=_fetch_in_child, args=(record, to, result, gate))
    proc.start()
    return proc


def wait_for(condition, what: str) -> None:
    deadline = time.time() + WAIT_S
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def partials(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.partial")) if folder.exists() else []


def started_writing(folder: Path) -> bool:
    return any(p.stat().st_size > 0 for p in partials(folder))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and POSIX signals")
def test_ctrl_c_mid_transfer_leaves_no_file_and_no_partial(server, hub, tmp_path):
    record = server.add(payload(1 << 20), mode="stall")
    folder, result = tmp_path / "w", tmp_path / "result"
    proc = child(record, folder, result)
    try:
        assert server.half_sent.wait(WAIT_S)
        wait_for(lambda: started_writing(folder), "a partial download")
        os.kill(proc.pid, signal.SIGINT)
        proc.join(WAIT_S)
    finally:
        proc.kill()
    assert result.read_text() == "interrupted" and proc.exitcode == 130
    assert leftovers(folder) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and POSIX signals")
def test_a_killed_download_leaves_only_a_partial_which_a_later_fetch_clears(server, hub, tmp_path):
    body = payload(1 << 20)
    record = server.add(body, mode="stall")
    folder = tmp_path / "w"
    proc = child(record, folder, tmp_path / "result")
    try:
        assert server.half_sent.wait(WAIT_S)
        wait_for(lambda: started_writing(folder), "a partial download")
    finally:
        proc.kill()
        proc.join(WAIT_S)
    (stale,) = partials(folder)  # SIGKILL runs no cleanup: torch's temporary name, never the real one
    assert not (folder / record.file).exists()
    os.utime(stale, (time.time() - 2 * weights.STALE_PARTIAL_S,) * 2)
    live = folder / f"{record.file}.0123abcd.partial"  # as if another tool were downloading it right now
    live.write_bytes(b"in progress")
    server.routes["/" + record.file] = ("ok", body)
    assert weights.fetch(record, to=folder).read_bytes() == body
    assert leftovers(folder) == sorted([record.file, live.name])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_two_processes_fetching_one_file_download_it_once(server, hub, tmp_path):
    body = payload(1 << 20)
    record = server.add(body, mode="slow")
    folder, gate = tmp_path / "w", tmp_path / "go"
    results = [tmp_path / f"result{i}" for i in range(2)]
    procs = [child(record, folder, result, gate) for result in results]
    try:
        wait_for(lambda: len(list(tmp_path.glob("go.*.ready"))) == 2, "both processes to start")
        gate.touch()
        for proc in procs:
            proc.join(WAIT_S)
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert {r.read_text() for r in results} == {f"ok {folder / record.file}"}
    assert server.count(record) == 1
    assert (folder / record.file).read_bytes() == body and leftovers(folder) == [record.file]


@pytest.fixture
def test_table(server, monkeypatch):
    """The known keys, each pointing at a generated file on the local server."""
    table = {key: server.add(payload(4096, seed=i), key=key, stem=key) for i, key in enumerate(weights.KNOWN)}
    monkeypatch.setattr(weights, "KNOWN", table)
    return table


def test_vqtk_download_all_to_a_folder(server, hub, test_table, tmp_path, capsys):
    folder = tmp_path / "shared"
    assert main(["download", "all", "--to", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{key}: {folder / r.file} (downloaded, verified)" for key, r in test_table.items()]
    assert all(server.count(r) == 1 for r in test_table.values())
    assert main(["download", "lpips-vgg", "all", "--to", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{key}: {folder / r.file} (already present, verified)" for key, r in test_table.items()]
    assert all(server.count(r) == 1 for r in test_table.values())
    assert main(["download"]) == 0  # lists them: none in the (empty) hub cache
    listing = capsys.readouterr().out
    assert listing.count("not downloaded") == len(test_table) and str(hub) in listing


def test_vqtk_download_reports_each_failure_and_unknown_names(server, hub, test_table, monkeypatch, capsys):
    server.routes["/" + test_table["lpips-alex"].file] = ("500", b"")
    assert main(["download", "lpips-alex", "lpips-squeeze"]) == 2
    captured = capsys.readouterr()
    assert captured.out.strip() == f"lpips-squeeze: {hub / test_table['lpips-squeeze'].file} (downloaded, verified)"
    assert captured.err.startswith("vqtk: error: lpips-alex: ") and "HTTP 500" in captured.err
    assert main(["download", "lpips-vg"]) == 2
    assert "unknown name 'lpips-vg'; choose from lpips-vgg" in capsys.readouterr().err
    monkeypatch.setenv("VQTK_OFFLINE", "1")
    assert main(["download", "fid-inception"]) == 2
    assert "VQTK_OFFLINE=1 forbids downloading" in capsys.readouterr().err


def test_lpips_loss_builds_with_a_fetched_backbone(server, hub, monkeypatch):
    """The real path: LPIPSLoss -> vqtk.io.weights.fetch -> local server -> hub cache -> lpips's backbone."""
    import torchvision

    from vqtk_builtins.losses.perceptual import LPIPSLoss

    state = torchvision.models.squeezenet1_1(weights=None).state_dict()  # torchvision's layout, random weights
    buffer = io.BytesIO()
    torch.save(state, buffer)
    record = server.add(buffer.getvalue(), key="lpips-squeeze", stem="squeezenet1_1")
    monkeypatch.setitem(weights.KNOWN, "lpips-squeeze", record)
    loss = LPIPSLoss(net="squeeze")
    assert server.count(record) == 1 and (hub / record.file).is_file()
    for name, tensor in loss.network.net.state_dict().items():
        _slice, index, rest = name.split(".", 2)
        assert torch.equal(tensor, state[f"features.{index}.{rest}"]), name


def test_fid_weight_lookup_fetches_the_fid_inception_file(server, hub, monkeypatch):
    record = server.add(payload(), key="fid-inception", stem="weights-inception")
    monkeypatch.setitem(weights.KNOWN, "fid-inception", record)
    assert fid.find_inception_weights() == hub / record.file
    assert fid.find_inception_weights("~/x.pth") == Path("~/x.pth").expanduser()
    monkeypatch.setenv("VQTK_OFFLINE", "1")
    (hub / record.file).unlink()
    assert fid.find_inception_weights() is None
    reason = fid.missing_weights_reason()
    assert reason.startswith(f"needs {record.file} in {hub}") and "`vqtk download fid-inception`" in reason


def test_known_files_are_the_ones_torchvision_and_torch_fidelity_download():
    import torchvision.models as tvm

    for key, w in (("lpips-vgg", tvm.VGG16_Weights.IMAGENET1K_V1), ("lpips-alex", tvm.AlexNet_Weights.IMAGENET1K_V1),
                   ("lpips-squeeze", tvm.SqueezeNet1_1_Weights.IMAGENET1K_V1)):
        record = weights.KNOWN[key]
        assert (record.url, record.approx_mib) == (w.url, w.meta["_file_size"])
    for record in weights.KNOWN.values():
        assert record.url.rsplit("/", 1)[1] == record.file
        assert torch.hub.HASH_REGEX.search(record.file).group(1) == record.sha256_prefix  # what torch.hub checks
    fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    assert weights.KNOWN["fid-inception"].url == fidelity.URL_INCEPTION_V3
