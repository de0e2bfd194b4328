"""Dataset downloads against a local HTTP server on 127.0.0.1 serving small files made here."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import struct
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from parm.data import build_datamodule
from parm.data import download as dl
from parm.data.download import Remote, fetch


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` by path; honours ``Range``; ``cut`` closes a file's first response early."""

    files: dict[str, bytes] = {}
    cut: dict[str, int] = {}
    ranges: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.ranges.append(self.headers.get("Range"))
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        stop = self.cut.pop(self.path, len(body))
        self.wfile.write(body[start:stop])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.files, _Handler.cut, _Handler.ranges = {}, {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _idx(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def _mnist_files(rng: np.random.Generator, n_train: int = 60, n_test: int = 20) -> dict[str, np.ndarray]:
    return {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}


def _serve_idx(url: str, arrays: dict[str, np.ndarray]) -> tuple[Remote, ...]:
    remotes = []
    for stem, array in arrays.items():
        raw = _idx(array)
        _Handler.files[f"/{stem}.gz"] = gzip.compress(raw)
        remotes.append(Remote(f"{stem}.gz", (f"{url}/missing/{stem}.gz", f"{url}/{stem}.gz"),
                              hashlib.sha256(raw).hexdigest(), gunzip=True))
    return tuple(remotes)


def test_mnist_downloads_verifies_and_converts_once(server: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = _mnist_files(np.random.default_rng(0))
    monkeypatch.setitem(dl.SOURCES, "mnist", _serve_idx(server, arrays))  # first mirror 404s, second serves
    dm = build_datamodule("mnist", data_dir=str(tmp_path), group_size=2, groups_per_batch=2, val_size=10)
    dm.setup()
    x_test, y_test = dm.split("test")
    assert (tmp_path / "mnist.npz").exists() and not list(tmp_path.glob("**/*.part"))
    with np.load(tmp_path / "mnist.npz") as saved:
        assert np.array_equal(saved["x_train"], arrays["train-images-idx3-ubyte"])
        assert np.array_equal(saved["y_test"], arrays["t10k-labels-idx1-ubyte"].astype(np.int64))
    assert x_test.shape == (20, 1, 28, 28) and sorted(y_test.tolist()) == sorted(arrays["t10k-labels-idx1-ubyte"])
    requests = len(_Handler.ranges)
    build_datamodule("mnist", data_dir=str(tmp_path), group_size=2, groups_per_batch=2, val_size=10).setup()
    assert len(_Handler.ranges) == requests, "a converted dataset is not downloaded again"


def test_an_interrupted_download_continues_where_it_stopped(server: str, tmp_path: Path) -> None:
    body = np.random.default_rng(1).bytes(200_000)
    _Handler.files["/blob"] = body
    _Handler.cut["/blob"] = 70_000  # the first response ends early
    remote = Remote("blob", (f"{server}/blob",), hashlib.sha256(body).hexdigest())
    with pytest.raises(OSError, match=r"blob could not be downloaded: .*closed at 70000 of 200000 bytes"):
        fetch(remote, tmp_path, progress=False)
    assert (tmp_path / "blob.part").stat().st_size == 70_000
    assert fetch(remote, tmp_path, progress=False).read_bytes() == body
    assert _Handler.ranges[-1] == "bytes=70000-", "the second attempt asks only for the rest"


def test_a_wrong_checksum_is_refused_and_leaves_nothing(server: str, tmp_path: Path) -> None:
    _Handler.files["/blob"] = b"not what was promised"
    remote = Remote("blob", (f"{server}/blob",), "0" * 64)
    with pytest.raises(ValueError, match=r"blob: every mirror served a file with the wrong checksum: .*sha256"):
        fetch(remote, tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_cifar10_binary_archive_converts_to_the_part_layout(server: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    batches = [rng.integers(0, 256, (n, 1 + 3072), dtype=np.uint8) for n in (8, 8, 8, 8, 8, 10)]
    for rows in batches:
        rows[:, 0] %= 10
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for name, rows in zip(names, batches, strict=True):
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = rows.nbytes
            tar.addfile(info, io.BytesIO(rows.tobytes()))
    _Handler.files["/cifar.tgz"] = archive.getvalue()
    monkeypatch.setitem(dl.SOURCES, "cifar10", (Remote("cifar-10-binary.tar.gz", (f"{server}/cifar.tgz",),
                                                       hashlib.sha256(archive.getvalue()).hexdigest()),))
    monkeypatch.setattr(build_datamodule("cifar10", group_size=1).__class__, "part_starts", (0, 15, 30))
    dm = build_datamodule("cifar10", data_dir=str(tmp_path), group_size=1, groups_per_batch=2, val_size=5)
    dm.setup()
    x_test, _ = dm.split("test")
    first = batches[5][0]
    assert x_test.shape == (10, 3, 32, 32)
    with np.load(tmp_path / "cifar10_test.npz") as saved:
        assert np.array_equal(saved["x_test"][0], first[1:].reshape(3, 32, 32).transpose(1, 2, 0))
        assert saved["y_test"][0] == first[0]
    with np.load(tmp_path / "cifar10_train_part3.npz") as part3:
        assert len(part3["y_train"]) == 10 and int(part3["index_start"]) == 30


def test_offline_says_which_file_where_and_the_download_command(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    unreachable = Remote("train-images-idx3-ubyte.gz", ("http://127.0.0.1:9/nothing",), "0" * 64, gunzip=True)
    monkeypatch.setitem(dl.SOURCES, "fashion_mnist", (unreachable,))
    with pytest.raises(FileNotFoundError, match=r"expected the file .*fashion_mnist\.npz.*The download failed .*"
                       r"Download it with `python -m parm.data.download fashion_mnist --data-dir .*` on a machine"):
        build_datamodule("fashion_mnist", data_dir=str(tmp_path), group_size=2).setup()


def test_the_download_command_prepares_a_dataset(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(dl.SOURCES, "mnist", _serve_idx(server, _mnist_files(np.random.default_rng(3))))
    dl.main(["mnist", "--data-dir", str(tmp_path)])
    assert (tmp_path / "mnist.npz").exists() and "mnist: ready in" in capsys.readouterr().out
