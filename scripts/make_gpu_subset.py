"""Build the CIFAR-10 GPU subset (../shared/data/README.md, last section) in the layout parm reads.

    python scripts/make_gpu_subset.py --src ../shared/data --dst gpu_data [--scale 0.02]

Train: the 12,540 images at ``train_idx_in_full`` of the concatenated 50,000-image train set (parts 1,
2, 3 in order); test: the first ``n_test`` (5,000) images of ``cifar10_test.npz``. Written as
``cifar10_train_part{1,2,3}.npz`` + ``cifar10_test.npz`` (uint8, as the full files), so
``data=cifar10 data_dir=gpu_data`` trains on it unchanged. ``--scale`` keeps a class-balanced fraction
of both splits (tiny CPU smoke tests of ``scripts/gpu_suite.sh``). Prints a table, writes
``subset.json`` with the counts and the sha256 of the index file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

INDEX_FILE = "cifar10_gpu_subset_index.npz"
INDEX_SHA256 = "d53d85db06cc3b85b3f5ad99a8aea854e1b0a9caca84f365459491f96b71031b"
PARTS = ("cifar10_train_part1.npz", "cifar10_train_part2.npz", "cifar10_train_part3.npz")


def _balanced(y: np.ndarray, fraction: float) -> np.ndarray:
    """Sorted positions keeping the first ``fraction`` of each class (at least one per class)."""
    keep = [np.flatnonzero(y == c)[: max(1, round(fraction * int((y == c).sum())))] for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


def build(src: Path, dst: Path, scale: float = 1.0, check_sha: bool = True) -> dict[str, object]:
    index_path = src / INDEX_FILE
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path} not found: point --src at the shared data folder "
                                f"(it holds {INDEX_FILE} and the CIFAR-10 parts).")
    digest = hashlib.sha256(index_path.read_bytes()).hexdigest()
    if check_sha and digest != INDEX_SHA256:
        raise ValueError(f"{index_path} has sha256 {digest}, expected {INDEX_SHA256}: the file is not the "
                         "published subset index. Pass --no-check to use it anyway.")
    index = np.load(index_path)
    parts = [np.load(src / name) for name in PARTS]
    x_full = np.concatenate([p["x_train"] for p in parts])
    y_full = np.concatenate([p["y_train"] for p in parts])
    train_idx = index["train_idx_in_full"].astype(np.int64)
    x_train, y_train = x_full[train_idx], y_full[train_idx]
    test = np.load(src / "cifar10_test.npz")
    n_test = int(index["n_test"])
    x_test, y_test = test["x_test"][:n_test], test["y_test"][:n_test]
    canonical = test["order_is_canonical"][:n_test]
    if scale < 1.0:
        keep = _balanced(y_train, scale)
        x_train, y_train = x_train[keep], y_train[keep]
        keep = _balanced(y_test, scale)
        x_test, y_test, canonical = x_test[keep], y_test[keep], canonical[keep]
    dst.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(x_train), len(PARTS) + 1).round().astype(int)
    for name, start, stop in zip(PARTS, bounds[:-1], bounds[1:], strict=True):
        np.savez_compressed(dst / name, x_train=x_train[start:stop], y_train=y_train[start:stop],
                            index_start=np.int64(start))
    np.savez_compressed(dst / "cifar10_test.npz", x_test=x_test, y_test=y_test, order_is_canonical=canonical)
    info = {"train": int(len(x_train)), "test": int(len(x_test)), "scale": scale, "index_sha256": digest,
            "train_per_class": np.bincount(y_train, minlength=10).tolist(), "dst": str(dst)}
    (dst / "subset.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default="../shared/data", help="folder with the index and CIFAR-10 files")
    parser.add_argument("--dst", default="gpu_data", help="output folder (git-ignored)")
    parser.add_argument("--scale", type=float, default=1.0, help="keep this class-balanced fraction")
    parser.add_argument("--no-check", action="store_true", help="skip the index file's sha256 check")
    args = parser.parse_args(argv)
    info = build(Path(args.src), Path(args.dst), args.scale, check_sha=not args.no_check)
    print(f"CIFAR-10 GPU subset -> {info['dst']}: {info['train']} train, {info['test']} test "
          f"(scale {info['scale']}, index sha256 {str(info['index_sha256'])[:12]}...)")
    return info


if __name__ == "__main__":
    main()
