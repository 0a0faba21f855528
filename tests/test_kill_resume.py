"""Nothing lost: a real ``fcnseg train`` process killed with SIGKILL at seeded random moments and resumed each
time ends with weights equal, bit for bit, to an uninterrupted run's; every checkpoint on disk stays loadable.
SIGTERM saves ``last.pt`` at a step boundary and prints the command that resumes the run."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fcnseg.core.checkpoint import load_checkpoint
from fcnseg.data.synthetic import write_shapes_dataset

REPO = Path(__file__).resolve().parents[1]
ITERS = 24
KILLS = 5


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    return os.environ | {"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "fcnseg", "train", "--model", "fcn32s_mobilenet_v2", "--dataset", "folder",
            "--data-root", str(data), "--classes", str(data / "classes.txt"), "--out", str(out),
            "--iters", str(ITERS), "--batch-size", "2", "--crop-size", "64", "64", "--lr", "0.001",
            "--val-every", "3", "--log-every", "1", "--workers", "0", "--device", "cpu", "--precision", "fp32",
            "--resume"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 64 x 64, not 32 x 32: at 32 MobileNet's stride-32 batch norms see 2 values per channel (1 x 1 maps, batch 2),
    # their gradients grow without bound, and the run stops on non-finite weights within 10 steps.
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=2, size=(64, 64))


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("straight")
    subprocess.run(_command(data, out), env=_env(), check=True, capture_output=True, timeout=300)
    return load_checkpoint(out / "last.pt")["state_dict"]


def _assert_loadable(out: Path) -> None:
    """Every checkpoint loads. A kill during a save may leave the hidden temporary file (``.last.*.tmp.pt``) that
    the next run removes; it is not a checkpoint, and the one it was replacing stays intact."""
    for path in out.glob("*.pt"):
        if not path.name.startswith("."):
            load_checkpoint(path)  # raises on a truncated or half-written file


def _assert_equal(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(state[key], value), key


def _wait_for_training(proc: subprocess.Popen, out: Path, started: float) -> bool:
    """Wait until this process has (re)written config.json, i.e. is about to train; False when it ended first."""
    config = out / "config.json"
    while proc.poll() is None:
        if config.exists() and config.stat().st_mtime >= started:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(data, reference, tmp_path) -> None:
    rng = random.Random(9)
    out, kills, resumes, steps_at_kill = tmp_path / "run", 0, 0, []
    while True:
        started = time.time() - 1  # mtime resolution
        proc = subprocess.Popen(_command(data, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        resumes += (out / "last.pt").exists()
        if kills < KILLS and _wait_for_training(proc, out, started):
            time.sleep(rng.uniform(0.0, 2.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                _assert_loadable(out)
                last = out / "last.pt"
                steps_at_kill.append(load_checkpoint(last)["train_state"]["step"] if last.exists() else 0)
                continue
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
        break
    print(f"kills {kills}, resumes {resumes}, last.pt step at each kill {steps_at_kill}")
    assert kills == KILLS and resumes >= KILLS
    assert len(set(steps_at_kill)) > 1  # the kills landed at different moments of the run
    _assert_loadable(out)
    final = load_checkpoint(out / "last.pt")
    assert final["train_state"]["step"] == ITERS
    _assert_equal(final["state_dict"], reference)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, ITERS + 1))


@pytest.mark.slow
def test_sigterm_saves_and_prints_the_resume_command(data, reference, tmp_path) -> None:
    out = tmp_path / "run"
    started = time.time() - 1
    proc = subprocess.Popen(_command(data, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert _wait_for_training(proc, out, started)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    command = re.search(r"Resume with: (fcnseg train .*--resume)", err).group(1)
    step = load_checkpoint(out / "last.pt")["train_state"]["step"]
    assert 0 < step < ITERS
    argv = [sys.executable, "-m", *shlex.split(command)]
    subprocess.run(argv, env=_env(), check=True, capture_output=True, timeout=300)
    _assert_equal(load_checkpoint(out / "last.pt")["state_dict"], reference)
