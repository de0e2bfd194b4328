"""Shared fixtures of the serving tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

torch.set_num_threads(1)


@pytest.fixture
def linear_f() -> nn.Module:
    """A linear F on (1, 4, 4) inputs, so the sum code recovers it exactly."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
