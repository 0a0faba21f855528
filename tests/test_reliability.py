"""Long runs and untrusted input: a non-finite loss stops (or is skipped and counted) without touching the last good
checkpoint; a full or unwritable run folder is found before training or reported without damage; files that would
run code on load are refused in one line; --weights-sha256; one-line usage errors with suggestions; progress lines
instead of redraws when stderr is not a terminal."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from fcnseg.cli.main import main
from fcnseg.core import progress
from fcnseg.core.checkpoint import load_checkpoint
from fcnseg.core.safe_load import UntrustedFileError, load_tensors
from fcnseg.data.synthetic import write_shapes_dataset
from fcnseg.training import step as step_module
from fcnseg.training.config import TrainConfig
from fcnseg.training.guards import TrainingError
from fcnseg.training.loop import train


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=6, num_val=2, size=(32, 32))


def _config(shapes: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="fcn32s_mobilenet_v2", dataset="folder", data_root=str(shapes),
                classes=str(shapes / "classes.txt"), out=str(out), iters=6, batch_size=2, crop_size=(32, 32),
                lr=1e-3, val_every=2, log_every=1, workers=0, precision="fp32", device="cpu")  # fmt: skip
    return TrainConfig(**(base | kw)).resolved()


def _nan_loss_on_call(monkeypatch: pytest.MonkeyPatch, bad_call: int) -> None:
    """Make the loss of the ``bad_call``-th training step NaN (the check in SGDStep then sees it)."""
    real, calls = step_module.loss_terms, []

    def loss(*args, **kwargs):
        calls.append(1)
        summed, count = real(*args, **kwargs)
        return (summed * float("nan"), count) if len(calls) == bad_call else (summed, count)

    monkeypatch.setattr(step_module, "loss_terms", loss)


def test_nonfinite_loss_stops_naming_step_and_files_and_keeps_last_good(shapes, tmp_path, monkeypatch) -> None:
    _nan_loss_on_call(monkeypatch, bad_call=4)  # the 4th step is step index 3, after the save at step 2
    with pytest.raises(TrainingError) as info:
        train(_config(shapes, tmp_path))
    message = str(info.value)
    assert "non-finite loss at step 3 on the batch train_" in message and "last.pt from step 2 is kept" in message
    assert "--skip-nonfinite" in message and "\n" not in message
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["train_state"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_skip_nonfinite_skips_and_counts(shapes, tmp_path, monkeypatch) -> None:
    _nan_loss_on_call(monkeypatch, bad_call=4)
    summary = train(_config(shapes, tmp_path, skip_nonfinite=True))
    assert summary["steps"] == 6 and summary["nonfinite_skipped"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["train_state"]["nonfinite_skipped"] == 1


def test_full_disk_is_found_before_training(shapes, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(
        "fcnseg.training.guards.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(0, 0, 1 << 20)
    )
    with pytest.raises(TrainingError, match=r"has 1 MiB free but its checkpoints need about \d+ MiB"):
        train(_config(shapes, tmp_path / "run"))
    assert not (tmp_path / "run" / "last.pt").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(TrainingError, match="cannot write to the run folder"):
        train(_config(shapes, tmp_path / "file" / "run"))


def test_failed_save_keeps_the_previous_checkpoint(shapes, tmp_path, monkeypatch) -> None:
    real_save, saves = torch.save, []

    def save(obj, path, *args, **kwargs):  # the disk fills up half-way through the second last.pt
        saves.append(path)
        if len(saves) == 3:  # last.pt, best.pt at step 2; then last.pt at step 4
            Path(path).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(TrainingError, match=r"the disk is full\); the previous last.pt is intact.*--resume"):
        train(_config(shapes, tmp_path))
    assert load_checkpoint(tmp_path / "last.pt")["train_state"]["step"] == 2
    assert not list(tmp_path.glob(".*.tmp.*"))  # the half-written temporary file is gone


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this would run",))


def test_files_that_would_run_code_are_refused_in_one_line(shapes, tmp_path, capsys) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"format": "fcnseg-checkpoint", "payload": _RunsCode()}, evil)
    with pytest.raises(UntrustedFileError, match=r"refused to load checkpoint .*evil\.pt.*calls posix\.system"):
        load_tensors(evil, what="checkpoint")
    args = ["--dataset", "folder", "--data-root", str(shapes), "--classes", str(shapes / "classes.txt")]
    assert main(["eval", str(evil), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fcnseg eval: error: refused to load checkpoint") and "\n" not in err
    code = main(["train", "--model", "fcn32s_mobilenet_v2", "--dataset", "folder", "--data-root", str(shapes),
                 "--classes", str(shapes / "classes.txt"), "--backbone-weights", str(evil),
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2 and "refused to load backbone weights" in capsys.readouterr().err


def test_weights_sha256_is_checked_before_reading(shapes, tmp_path, capsys) -> None:
    from fcnseg.models import create_model

    weights = tmp_path / "mobilenet.pth"
    torch.save(create_model("fcn32s_mobilenet_v2", num_classes=2).backbone.state_dict(), weights)
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    args = ["train", "--model", "fcn32s_mobilenet_v2", "--dataset", "folder", "--data-root", str(shapes),
            "--classes", str(shapes / "classes.txt"), "--backbone-weights", str(weights),
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main([*args, "--weights-sha256", "0" * 64]) == 2
    err = capsys.readouterr().err
    assert f"has SHA-256 {good}, not {'0' * 64}" in err
    # The right digest passes the check; reading then fails only because this file is not in torchvision's layout.
    assert main([*args, "--weights-sha256", good]) == 2
    assert "SHA-256" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["trian"], "invalid choice 'trian'; did you mean 'train'?"),
        (["train", "--data-root", "d", "--lr-rate", "1"], "unrecognized arguments: --lr-rate 1; did you mean '--lr'?"),
        (["check-data", "--dataset", "citiscapes", "--data-root", "d"], "did you mean 'cityscapes'?"),
        (["train", "--data-root", "d", "--model", "fcn8s_resnet81"], "did you mean 'fcn8s_resnet18'?"),
        (["train", "--data-root", "d", "--precision", "bf61"], "did you mean 'bf16'?"),
        (["train", "--data-root", "d", "--batch-size", "x"], "invalid int value: 'x'"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(argv, expected, capsys) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert expected in err and len(err.splitlines()) == 1, err


def test_progress_without_a_terminal_is_occasional_log_lines(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    assert not progress.stderr_is_terminal()  # pytest captures stderr
    monkeypatch.setattr(progress, "QUIET_SECONDS", 0.0)  # a long run: lines from the start
    bar = progress.make_bar(600, desc="train", unit="step")
    with caplog.at_level(logging.INFO, logger="fcnseg.progress"):
        for _ in range(600):
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 20 and lines[-1].startswith("train: 600/600 (100%)")
