"""Shared test fixtures: paths to ../shared (beside the checkout) and seeding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CAMVID = SHARED / "data" / "camvid"
SQUEEZENET_WEIGHTS = SHARED / "weights" / "squeezenet1_1-imagenet-features.pth"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def require(path: Path) -> Path:
    """Skip the calling test when a file from ../shared is absent (a checkout without the shared folder)."""
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path
