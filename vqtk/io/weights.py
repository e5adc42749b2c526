"""Pretrained weight files vqtk knows, fetched on first use: verified, locked, never half-written.

:data:`KNOWN` lists each file (the LPIPS backbones, the FID Inception) with its
URL and the SHA-256 prefix written in its name (``vgg16-397923af.pth``: the
check ``torch.hub`` and torchvision make). :func:`fetch` returns a verified
local copy, downloading it when absent.

Where files are looked for, and downloaded to (the first that applies):

1. ``to=DIR`` (``vqtk download --to DIR``): DIR only;
2. ``$VQTK_WEIGHTS_DIR`` (shared storage): that folder, then torch's hub cache;
   downloads go to ``$VQTK_WEIGHTS_DIR``;
3. torch's hub cache, ``torch.hub.get_dir()/checkpoints`` (follows
   ``torch.hub.set_dir``, ``$TORCH_HOME``, ``$XDG_CACHE_HOME``): where
   torchvision and torch-fidelity save the same files under the same names.

A file found is used only if its SHA-256 matches (hashed once per process); a
file that does not is named in a one-line error and never used nor replaced.
A missing file is downloaded by ``torch.hub.download_url_to_file`` (a
``.partial`` file moved into place only once complete and verified: a failure,
a wrong hash or Ctrl-C leaves nothing), under a file lock so that concurrent
processes (DDP ranks) download it once. ``VQTK_OFFLINE=1`` forbids downloads;
then, as after any network failure, a one-line :class:`MissingFileError` says
which file, where it was looked for and the command that fetches it.
``VQTK_WEIGHTS_URL_<KEY>`` (``VQTK_WEIGHTS_URL_LPIPS_VGG``) replaces a file's
URL (a mirror; the hash is still checked).
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import os
import sys
import time
import urllib.error
from pathlib import Path
from typing import Optional, Union

import filelock
import torch.hub

from vqtk.errors import MissingFileError, VqtkError
from vqtk.io.files import file_sha256

logger = logging.getLogger("vqtk")

#: a ``.partial`` download untouched this long was left by a killed process
STALE_PARTIAL_S = 600


@dataclasses.dataclass(frozen=True)
class WeightFile:
    """One downloadable weight file.

    ``sha256_prefix`` is required (at least 8 hex digits): a file is never used
    unverified. ``size`` (bytes) is checked when given; ``approx_mib`` is for
    messages only.
    """

    key: str
    file: str
    url: str
    sha256_prefix: str
    what: str
    size: Optional[int] = None
    approx_mib: Optional[float] = None

    def __post_init__(self):
        prefix = self.sha256_prefix
        if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
            raise ValueError(f"{self.key}: sha256_prefix must be 8+ lowercase hex digits, got {prefix!r}")


_TORCHVISION = "https://download.pytorch.org/models/"

KNOWN: dict[str, WeightFile] = {
    r.key: r
    for r in (
        WeightFile("lpips-vgg", "vgg16-397923af.pth", _TORCHVISION + "vgg16-397923af.pth", "397923af",
                   "torchvision's ImageNet VGG16, the LPIPS vgg backbone", approx_mib=527.796),
        WeightFile("lpips-alex", "alexnet-owt-7be5be79.pth", _TORCHVISION + "alexnet-owt-7be5be79.pth",
                   "7be5be79", "torchvision's ImageNet AlexNet, the LPIPS alex backbone", approx_mib=233.087),
        WeightFile("lpips-squeeze", "squeezenet1_1-b8a52dc0.pth", _TORCHVISION + "squeezenet1_1-b8a52dc0.pth",
                   "b8a52dc0", "torchvision's ImageNet SqueezeNet 1.1, the LPIPS squeeze backbone",
                   approx_mib=4.729),
        WeightFile("fid-inception", "weights-inception-2015-12-05-6726825d.pth",
                   "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                   "weights-inception-2015-12-05-6726825d.pth",
                   "6726825d", "torch-fidelity's FID Inception v3, TensorFlow's 2015-12-05 weights converted"),
    )
}

#: files already checked, by (path, device, inode, size, mtime): their SHA-256 (or its verified prefix)
_verified: dict[tuple, str] = {}


def record_of(key_or_record: Union[str, WeightFile]) -> WeightFile:
    """The :class:`WeightFile` for a key of :data:`KNOWN` (or the record itself)."""
    if isinstance(key_or_record, WeightFile):
        return key_or_record
    try:
        return KNOWN[key_or_record]
    except KeyError:
        raise VqtkError(f"unknown weight file {key_or_record!r}; known: {', '.join(KNOWN)}") from None


def hub_checkpoint_dir() -> Path:
    """torch's hub cache, ``torch.hub.get_dir()/checkpoints``, where torchvision saves its weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_dirs(to: Union[str, os.PathLike, None] = None) -> list[Path]:
    """Folders searched, in order; the first is where downloads go (see the module doc)."""
    if to is not None:
        return [Path(to).expanduser()]
    shared = os.environ.get("VQTK_WEIGHTS_DIR", "").strip()
    hub = hub_checkpoint_dir()
    if shared and Path(shared).expanduser() != hub:
        return [Path(shared).expanduser(), hub]
    return [hub]


def is_offline() -> bool:
    """``$VQTK_OFFLINE`` set to anything but empty, ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get("VQTK_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def url_env_var(record: WeightFile) -> str:
    return "VQTK_WEIGHTS_URL_" + record.key.upper().replace("-", "_")


def url_of(record: WeightFile) -> str:
    """The record's URL, or ``$VQTK_WEIGHTS_URL_<KEY>`` when set."""
    return os.environ.get(url_env_var(record), "").strip() or record.url


def download_command(record: WeightFile) -> str:
    return f"vqtk download {record.key}"


def _stat_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def verify(path: Path, record: WeightFile) -> None:
    """Raise a one-line :class:`VqtkError` unless ``path`` has the record's size and SHA-256 prefix.

    The hash of an unchanged file (same inode, size and mtime) is computed once per process.
    """
    key = _stat_key(path)
    size = key[3]
    fix = f"delete it (rm {str(path)!r}) and run `{download_command(record)}`"
    if record.size is not None and size != record.size:
        raise VqtkError(f"{path}: {size} bytes, expected {record.size}: a truncated or corrupt copy "
                        f"of {record.what}; {fix}")
    digest = _verified.get(key) or file_sha256(path)
    if not digest.startswith(record.sha256_prefix):
        raise VqtkError(f"{path}: SHA-256 {digest[:16]}... does not start with {record.sha256_prefix}: a "
                        f"truncated or corrupt copy of {record.what}; {fix}")
    _verified[key] = digest


def find(key_or_record: Union[str, WeightFile], *, to: Union[str, os.PathLike, None] = None) -> Optional[Path]:
    """The verified local copy, or ``None`` when there is none (a corrupt one raises, see :func:`verify`)."""
    record = record_of(key_or_record)
    for folder in weights_dirs(to):
        path = folder / record.file
        if path.is_file():
            verify(path, record)
            return path
    return None


def fetch(
    key_or_record: Union[str, WeightFile],
    *,
    to: Union[str, os.PathLike, None] = None,
    progress: Optional[bool] = None,
) -> Path:
    """A verified local copy of a weight file, downloaded first when absent (see the module doc).

    Args:
        key_or_record: a key of :data:`KNOWN` (``"lpips-vgg"``) or a :class:`WeightFile`.
        to: the one folder to use instead of ``$VQTK_WEIGHTS_DIR`` / the hub cache.
        progress: show a download progress bar (default: when stderr is a terminal).

    Raises:
        MissingFileError: absent and offline (``VQTK_OFFLINE=1``) or the download failed.
        VqtkError: a local copy is corrupt, the download did not match its hash, or the folder is not writable.
    """
    record = record_of(key_or_record)
    found = find(record, to=to)
    if found is not None:
        return found
    dirs = weights_dirs(to)
    target = dirs[0] / record.file
    where = " nor ".join(str(d) for d in dirs)
    if is_offline():
        raise MissingFileError(
            f"{record.file} ({record.what}) is not in {where} and VQTK_OFFLINE={os.environ['VQTK_OFFLINE']} "
            "forbids downloading it: "
            f"run `{download_command(record)}` where the network is reachable, or copy the file into {dirs[0]}"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(target) + ".lock")
        try:
            lock.acquire(timeout=1)
        except filelock.Timeout:
            logger.info("waiting for another process downloading %s (lock %s)", target, lock.lock_file)
            lock.acquire()
    except OSError as exc:
        raise VqtkError(f"{target.parent}: cannot write {record.file} there ({exc.strerror or exc}); "
                        "choose a writable folder with VQTK_WEIGHTS_DIR or `vqtk download --to DIR`") from None
    try:
        if target.is_file():  # another process downloaded it while this one waited
            verify(target, record)
            return target
        _remove_stale_partials(target)
        _download(record, target, where, progress=sys.stderr.isatty() if progress is None else progress)
    finally:
        lock.release()
    return target


def _download(record: WeightFile, target: Path, where: str, *, progress: bool) -> None:
    url = url_of(record)
    size = f" ({record.approx_mib:.0f} MiB)" if record.approx_mib else ""
    logger.info("downloading %s%s from %s to %s", record.file, size, url, target)

    def failed(reason: object) -> MissingFileError:
        return MissingFileError(
            f"{record.file} ({record.what}) is not in {where} and downloading it from {url} failed ({reason}); "
            f"run `{download_command(record)}` once the network is reachable, or copy the file into {target.parent}"
        )

    try:
        # writes <target>.<uuid>.partial, checks the hash, then moves it into place; removes it on any error
        torch.hub.download_url_to_file(url, str(target), hash_prefix=record.sha256_prefix, progress=progress)
    except urllib.error.HTTPError as exc:
        raise failed(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise failed(exc.reason) from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        raise failed(f"{type(exc).__name__}: {exc}") from None
    except ValueError as exc:  # urllib's "unknown url type"
        raise VqtkError(f"{record.file}: cannot download from {url!r} ({exc}); check {url_env_var(record)}") \
            from None
    except RuntimeError as exc:
        if "invalid hash value" not in str(exc):
            raise
        raise VqtkError(f"{record.file}: the file downloaded from {url} does not match its SHA-256 prefix "
                        f"{record.sha256_prefix} (a truncated or altered transfer); nothing was saved; "
                        f"run `{download_command(record)}` again") from None
    except OSError as exc:
        raise VqtkError(f"{target.parent}: cannot write {record.file} ({exc.strerror or exc}); nothing was "
                        "saved; free space or choose another folder with VQTK_WEIGHTS_DIR") from None
    _verified[_stat_key(target)] = record.sha256_prefix  # torch checked the hash before moving it into place
    logger.info("saved %s (SHA-256 verified)", target)


def _remove_stale_partials(target: Path) -> None:
    """Remove ``<target>.<uuid>.partial`` files a killed download left (untouched for ``STALE_PARTIAL_S``)."""
    now = time.time()
    for partial in target.parent.glob(target.name + ".*.partial"):
        try:
            if now - partial.stat().st_mtime > STALE_PARTIAL_S:
                partial.unlink()
                logger.info("removed %s, left by an interrupted download", partial)
        except OSError:
            pass
