"""Download MNIST, Fashion-MNIST and CIFAR-10 from their canonical mirrors, without torchvision.

Each file is fetched into ``<data_dir>/downloads/`` as ``NAME.part`` (continued with an HTTP ``Range``
request when a previous attempt stopped; started again when the server ignores it), checked against
its sha256, renamed into place, and converted once to parm's ``.npz`` layout (written atomically).
MNIST-style files are checked by the sha256 of their uncompressed content, so a mirror that re-gzips
them still verifies; CIFAR-10 by the sha256 of the archive.

Command line: ``python -m parm.data.download mnist fashion_mnist cifar10 --data-dir data``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import struct
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

_CHUNK = 1 << 16
_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Remote:
    """One file to fetch.

    Args:
        name: the file's name, e.g. ``"train-images-idx3-ubyte.gz"``.
        urls: mirrors, tried in order.
        sha256: of the file itself, or (``gunzip=True``) of its uncompressed content.
        gunzip: the checksum is of the gunzipped content.
    """

    name: str
    urls: tuple[str, ...]
    sha256: str
    gunzip: bool = False


def _idx_files(mirrors: Sequence[str], sums: dict[str, str]) -> tuple[Remote, ...]:
    return tuple(Remote(f"{stem}.gz", tuple(m + f"{stem}.gz" for m in mirrors), digest, gunzip=True)
                 for stem, digest in sums.items())


# sha256 of the uncompressed IDX files: computed from copies whose md5 equals the official one.
_MNIST_SUMS = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_FASHION_SUMS = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SOURCES: dict[str, tuple[Remote, ...]] = {
    "mnist": _idx_files(("https://ossci-datasets.s3.amazonaws.com/mnist/",
                         "https://storage.googleapis.com/cvdf-datasets/mnist/"), _MNIST_SUMS),
    "fashion_mnist": _idx_files(("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
                                _FASHION_SUMS),
    # The binary version: fixed-size records, no pickle to unpickle.
    "cifar10": (Remote("cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                       "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),),
}


def command(dataset: str, data_dir: Path) -> str:
    """The shell command that downloads ``dataset`` into ``data_dir``."""
    return f"python -m parm.data.download {dataset} --data-dir {data_dir}"


def fetch(remote: Remote, folder: Path, progress: bool = True) -> Path:
    """Download ``remote`` into ``folder`` (continuing a partial file), check it, return its path.

    Raises:
        OSError: every mirror failed (the last error is chained).
        ValueError: the file's checksum is wrong on every mirror (the partial file is removed).
    """
    path = folder / remote.name
    if path.exists() and _digest(path, remote.gunzip) == remote.sha256:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{remote.name}.part"
    errors: list[str] = []
    for url in remote.urls:
        try:
            _download(url, part, progress)
        except (OSError, urllib.error.URLError) as e:  # keep the partial file: the next mirror continues it
            errors.append(f"{url}: {e}")
            continue
        digest = _digest(part, remote.gunzip)
        if digest == remote.sha256:
            os.replace(part, path)
            return path
        part.unlink()
        errors.append(f"{url}: sha256 {digest}, expected {remote.sha256}")
    if any("sha256" in e for e in errors) and not any("sha256" not in e for e in errors):
        raise ValueError(f"{remote.name}: every mirror served a file with the wrong checksum: {'; '.join(errors)}")
    raise OSError(f"{remote.name} could not be downloaded: {'; '.join(errors)}")


def _download(url: str, part: Path, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (a ``Range`` request from its current size)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)  # noqa: S310 - fixed https/http mirrors
    except urllib.error.HTTPError as e:
        if e.code != 416:  # 416: the partial file is already complete
            raise
        return
    with response:
        resumed = response.status == 206
        total = int(response.headers.get("Content-Length") or 0) + (have if resumed else 0)
        with open(part, "ab" if resumed else "wb") as out, \
                tqdm(total=total or None, initial=have if resumed else 0, unit="B", unit_scale=True,
                     desc=part.name.removesuffix(".part"), disable=not progress, file=sys.stderr) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    if total and part.stat().st_size != total:
        raise OSError(f"connection closed at {part.stat().st_size} of {total} bytes")


def _digest(path: Path, gunzip: bool) -> str:
    digest = hashlib.sha256()
    try:
        with (gzip.open(path, "rb") if gunzip else open(path, "rb")) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except (OSError, EOFError):  # a truncated or non-gzip file: its digest matches nothing
        return "unreadable"
    return digest.hexdigest()


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped) as a uint8 array: ``(N, H, W)`` images or ``(N,)`` labels."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (header {data[:4]!r}).")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_cifar10(archive: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Train and test ``(x (N, 32, 32, 3) uint8, y (N,) int64)`` from the binary archive, in canonical order."""
    record = 1 + 3 * 32 * 32
    names = [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)] + ["cifar-10-batches-bin/test_batch.bin"]
    splits = []
    with tarfile.open(archive, "r:gz") as tar:
        for name in names:
            member = tar.extractfile(name)  # read in memory: nothing is extracted to disk
            if member is None:
                raise ValueError(f"{archive} lacks {name}.")
            splits.append(np.frombuffer(member.read(), dtype=np.uint8).reshape(-1, record))
    train, test = np.concatenate(splits[:5]), splits[5]
    return tuple((rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(),  # type: ignore[return-value]
                  rows[:, 0].astype(np.int64)) for rows in (train, test))


def download(dataset: str, data_dir: Path, write: Callable[..., None], progress: bool = True,
             sources: dict[str, tuple[Remote, ...]] | None = None) -> None:
    """Fetch ``dataset``'s files into ``data_dir/downloads`` and hand the arrays to ``write(train, test)``.

    Args:
        dataset: ``mnist``, ``fashion_mnist`` or ``cifar10``.
        data_dir: the data folder.
        write: the datamodule's writer of its ``.npz`` layout, ``write((x, y), (x, y))``.
        progress: show a progress bar per file.
        sources: mirrors and checksums (default :data:`SOURCES`).
    """
    remotes = (sources or SOURCES).get(dataset)
    if remotes is None:
        raise ValueError(f"parm cannot download {dataset!r}; it downloads {', '.join(sorted(SOURCES))}.")
    paths = [fetch(remote, data_dir / "downloads", progress) for remote in remotes]
    if dataset == "cifar10":
        write(*read_cifar10(paths[0]))
        return
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    write((x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64)))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m parm.data.download NAME... --data-dir DIR``."""
    from parm.data import build_datamodule

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=sorted(SOURCES))
    parser.add_argument("--data-dir", default=os.environ.get("PARM_DATA_DIR") or "data")
    args = parser.parse_args(argv)
    for name in args.datasets:
        build_datamodule(name, data_dir=args.data_dir, group_size=1).prepare_data()
        print(f"{name}: ready in {args.data_dir}")


__all__ = ["SOURCES", "Remote", "command", "download", "fetch", "main", "read_cifar10", "read_idx"]

if __name__ == "__main__":
    main()
