"""Google Speech Commands keywords as log-mel spectrograms, computed once in plain torch."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parm.data.base import Splits, TensorDataModule
from parm.data.npz import check_split, missing, read_npz, save_npz

SAMPLE_RATE = 16_000
CLIP_SAMPLES = 16_000
N_MELS = 40
WIN_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms
N_FFT = 512
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
AUDIO_EXTRA = "pip install 'parity-models[audio]'"


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Triangular HTK-mel filters from 0 Hz to Nyquist.

    Returns:
        ``(n_mels, n_fft // 2 + 1)`` float32 weights, one row per mel band.
    """
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    top = _hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64))
    edges = _mel_to_hz(torch.linspace(0.0, float(top), n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.minimum(rising, falling).clamp_min(0.0).float()


def log_mel_spectrogram(waveforms: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """int16 16 kHz clips -> log-mel power spectrograms (25 ms Hann window, 10 ms hop, 40 mels).

    Args:
        waveforms: ``(N, T)`` int16 (or float in [-1, 1]) waveforms.
        chunk: clips transformed at a time (bounds the complex STFT's memory).

    Returns:
        ``(N, 1, 40, T // 160 + 1)`` float32; ``(N, 1, 40, 101)`` for one-second clips.
    """
    window = torch.hann_window(WIN_LENGTH)
    filters = mel_filterbank()
    out = []
    for start in range(0, len(waveforms), chunk):
        part = waveforms[start:start + chunk]
        part = part.float() / 32768.0 if part.dtype == torch.int16 else part.float()
        spec = torch.stft(part, N_FFT, HOP_LENGTH, WIN_LENGTH, window, center=True, return_complex=True)
        out.append(torch.log(filters @ spec.abs().square() + 1e-6).unsqueeze(1))
    frames = waveforms.shape[-1] // HOP_LENGTH + 1
    return torch.cat(out) if out else torch.empty(0, 1, N_MELS, frames)


class SpeechCommandsDataModule(TensorDataModule):
    """Ten Speech Commands keywords from ``data_dir/speech_commands_10kw_subset.npz``.

    The file's own train/val/test split is used (``val_size`` is ignored). Samples are ``(1, 40, 101)``
    float32 log-mel spectrograms, normalised with the training split's mean and std. ``augment`` is not
    supported: image crops and flips are meaningless on spectrograms.

    Args:
        download: when the file is missing, build it from the full dataset with torchaudio.
        **kwargs: as :class:`~parm.data.base.TensorDataModule`.
    """

    name = "speech_commands"
    file = "speech_commands_10kw_subset.npz"

    def __init__(self, *, download: bool = True, **kwargs: Any) -> None:
        if kwargs.get("augment", False):
            raise ValueError("augment=True is not supported for speech_commands (crop/flip are image "
                             "augmentations); set augment=False.")
        super().__init__(**kwargs)
        self.download = download

    def prepare_data(self) -> None:
        """Build the ``.npz`` from the full Speech Commands v0.01 when it is missing (needs torchaudio)."""
        path = self.data_dir / self.file
        if path.exists():
            return
        if not self.download:
            raise missing(path, self.name, f"Pass download=True to build it with torchaudio ({AUDIO_EXTRA}).")
        try:
            datasets = importlib.import_module("torchaudio.datasets")
        except ImportError as e:
            raise missing(path, self.name, f"Building it needs torchaudio, which is not installed: {AUDIO_EXTRA}. "
                          "Or copy the .npz file into that folder.") from e
        try:
            arrays = _fetch_keywords(datasets, self.data_dir / "torchaudio")
        except (OSError, RuntimeError) as e:
            raise missing(path, self.name, f"The torchaudio download failed ({e}).") from e
        save_npz(path, **arrays)

    def load_splits(self) -> Splits:
        self.prepare_data()
        path = self.data_dir / self.file
        arrays = read_npz(path, tuple(f"{a}_{s}" for s in ("train", "val", "test") for a in ("x", "y")))
        splits = {}
        for stage in ("train", "val", "test"):
            x, y = check_split(path, arrays[f"x_{stage}"], arrays[f"y_{stage}"], name=stage,
                               sample_shape=(CLIP_SAMPLES,), num_classes=len(WORDS), dtype=np.int16)
            splits[stage] = (log_mel_spectrogram(x), y)
        return Splits(train=splits["train"], val=splits["val"], test=splits["test"], class_names=WORDS)


def _fetch_keywords(datasets: Any, root: Path) -> dict[str, np.ndarray]:
    """The ten keywords of Speech Commands v0.01, official split, in the subset file's layout."""
    root.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for stage, subset in (("train", "training"), ("val", "validation"), ("test", "testing")):
        ds = datasets.SPEECHCOMMANDS(str(root), url="speech_commands_v0.01", download=True, subset=subset)
        xs, ys, lengths, files = [], [], [], []
        for i in range(len(ds)):
            relpath, _, label, *_ = ds.get_metadata(i)
            if label not in WORDS:
                continue
            wave = ds[i][0][0, :CLIP_SAMPLES]
            clip = np.zeros(CLIP_SAMPLES, dtype=np.int16)
            clip[: len(wave)] = (wave.clamp(-1, 1 - 2**-15) * 32768).round().to(torch.int16).numpy()
            xs.append(clip)
            ys.append(WORDS.index(label))
            lengths.append(len(wave))
            files.append("/".join(Path(relpath).parts[-2:]))
        arrays |= {f"x_{stage}": np.stack(xs), f"y_{stage}": np.asarray(ys, dtype=np.int64),
                   f"length_{stage}": np.asarray(lengths, dtype=np.int64), f"file_{stage}": np.asarray(files)}
    return arrays

