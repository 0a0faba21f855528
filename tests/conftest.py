"""Shared test fixtures: paths to ../shared (beside the checkout), seeding, and one short CamVid training run."""

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


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively, read from the kernel's CPU flags (not from PyTorch).

    Skips the calling test where ``/proc/cpuinfo`` is not there to ask (not Linux).
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("/proc/cpuinfo is not available to detect bf16 support")
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.partition(":")[2].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted models (``fcnseg predict``'s OpenVINO cache) go to a session folder, never to ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FCNSEG_CACHE", str(tmp_path_factory.mktemp("fcnseg_cache")))
        yield


def require(path: Path) -> Path:
    """Skip the calling test when a file from ../shared is absent (a checkout without the shared folder)."""
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


@pytest.fixture(scope="session")
def camvid_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A short seeded ``fcnseg train`` run on CamVid, trained once per test session: its run folder and summary.

    FCN-8s on the ImageNet-pretrained SqueezeNet 1.1 of ../shared, 60 steps of 4 crops of 192x192 (about a minute
    on 2 CPU cores), validated on the whole CamVid validation split.
    """
    from fcnseg.training.config import TrainConfig
    from fcnseg.training.loop import train

    require(CAMVID)
    out = tmp_path_factory.mktemp("camvid_run")
    config = TrainConfig(
        model="fcn8s_squeezenet1_1",
        dataset="camvid",
        data_root=str(CAMVID),
        out=str(out),
        backbone_weights=str(require(SQUEEZENET_WEIGHTS)),
        iters=60,
        batch_size=4,
        crop_size=(192, 192),
        lr=1e-3,
        warmup=10,
        val_every=60,
        log_every=10,
        workers=0,
        seed=0,
    ).resolved()
    return out, train(config)
