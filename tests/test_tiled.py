"""The tile-wise parity model answers each concat tile with one shared network and sums."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import TINY, run_train
from parm.coding import CodeSpec, build_code
from parm.models import TiledParity


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_output_is_sum_of_g_over_the_k_tiles(k: int) -> None:
    torch.manual_seed(0)
    code = build_code("concat", "subtraction", CodeSpec(k), (1, 28, 28), (10,))
    model = TiledParity(input_shape=(1, 28, 28), num_classes=10, tiles=k).eval()
    x = torch.randn(5, k, 1, 28, 28)
    parity = code.encode(x)[:, 0]
    assert model.grid == code.encoder.grid
    rows, cols = model.grid
    tiles = F.avg_pool2d(x.reshape(5 * k, 1, 28, 28), (rows, cols)).reshape(5, k, *model.tile_shape)
    expected = torch.stack([model.g(tiles[:, i]) for i in range(k)], dim=1).sum(1)
    torch.testing.assert_close(model(parity), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [3, 10, 12])
def test_padded_grid_matches_the_encoder(k: int) -> None:
    torch.manual_seed(0)
    code = build_code("concat", "subtraction", CodeSpec(k), (1, 28, 28), (10,), encoder_kwargs={"fit": "pad"})
    model = TiledParity(input_shape=(1, 28, 28), num_classes=10, tiles=k, fit="pad").eval()
    assert model.grid == code.encoder.grid == {3: (2, 2), 10: (3, 4), 12: (3, 4)}[k]
    x = torch.randn(2, k, 1, 28, 28)
    parity = code.encode(x)[:, 0]
    th, tw = model.tile_shape[1:]
    rows, cols = model.grid
    assert (parity[..., rows * th:, :] == 0).all() and (parity[..., :, cols * tw:] == 0).all()
    tiles = F.adaptive_avg_pool2d(x.reshape(2 * k, 1, 28, 28), (th, tw)).reshape(2, k, *model.tile_shape)
    expected = torch.stack([model.g(tiles[:, i]) for i in range(k)], dim=1).sum(1)
    torch.testing.assert_close(model(parity), expected, rtol=1e-5, atol=1e-5)


def test_mismatched_grids_are_refused(tmp_path: Path, tiny_data_dir: Path) -> None:
    with pytest.raises(ValueError, match="tile grid .* differs from the encoder's"):
        run_train(tmp_path, tiny_data_dir, [*TINY, "encoder=concat", "k=12", "parity_model=tiled",
                                            "+code.encoder_kwargs.fit=pad", "parity_model.fit=exact"])


def test_rejects_non_images() -> None:
    with pytest.raises(ValueError, match=r"concat parity images \(C, H, W\)"):
        TiledParity(input_shape=(784,), num_classes=10, tiles=2)


def test_trains_through_the_pipeline(tmp_path: Path, tiny_data_dir: Path) -> None:
    summary = run_train(tmp_path, tiny_data_dir, [*TINY, "encoder=concat", "k=4", "parity_model=tiled"])
    assert summary["config"]["parity_model"]["tiles"] == 4
    assert 0.0 <= summary["test"]["degraded_acc"] <= 1.0
