"""The training and export paths that matter on a GPU: no per-step host reads, cuDNN autotuning on fixed crops
only, fp16 steps skipped by the grad scaler (not raised), CUDA RNG in resume, export leaving the caller's model alone.

The CPU tests run everywhere; the CUDA ones skip without a GPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_reliability import _nan_loss_on_call
from test_training import _config, _interrupt_at, shapes  # noqa: F401 (the fixture)

from fcnseg import create_model
from fcnseg.core.checkpoint import load_checkpoint
from fcnseg.inference.export import export_model
from fcnseg.training.loop import Trainer, train
from fcnseg.training.runlog import LossWindow

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
CLASSES = {"names": ["a", "b", "c"], "colors": [[0, 0, 0], [1, 1, 1], [2, 2, 2]]}


def test_loss_window_averages_finite_losses_and_counts_the_others() -> None:
    window = LossWindow()
    for value in (1.0, float("nan"), 2.0, float("inf")):
        window.add(torch.tensor(value), images=4)
    window.add(None, images=4)  # a batch skipped before its step (fp32/bf16 with --skip-nonfinite)
    assert window.read() == (1.5, 2)
    assert window.images == 20 and window.steps == 4
    assert LossWindow().read() == (0.0, 0)


def test_steps_return_device_tensors_and_rows_log_their_mean(shapes, tmp_path, monkeypatch) -> None:  # noqa: F811
    returned: list[torch.Tensor] = []
    step = Trainer.train_step

    def recording(self, images, masks):
        loss = step(self, images, masks)
        returned.append(loss)
        return loss

    monkeypatch.setattr(Trainer, "train_step", recording)
    train(_config(shapes, tmp_path, iters=6, log_every=3, val_every=6))
    assert all(isinstance(t, torch.Tensor) and t.dim() == 0 for t in returned)  # not read back by the step
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r["loss"] for r in rows if "loss" in r]
    values = [t.item() for t in returned]
    assert logged == pytest.approx([sum(values[:3]) / 3, sum(values[3:]) / 3], rel=1e-6)


def test_export_leaves_the_callers_model_as_it_was(tmp_path: Path) -> None:
    model = create_model("fcn32s_mobilenet_v2", num_classes=3).to(torch.bfloat16).train()
    export_model(model, tmp_path / "m.ts", "torchscript", classes=CLASSES, mean=(0.5,) * 3, std=(0.5,) * 3,
                 check_sizes=[(64, 64)], tolerance=1e-3)  # fmt: skip
    assert (tmp_path / "m.ts").is_file()
    assert model.training
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


@needs_cuda
def test_export_of_a_gpu_model_keeps_it_on_the_gpu(tmp_path: Path) -> None:
    model = create_model("fcn32s_mobilenet_v2", num_classes=3).cuda().eval()
    export_model(model, tmp_path / "m.ts", "torchscript", classes=CLASSES, mean=(0.5,) * 3, std=(0.5,) * 3,
                 check_sizes=[(64, 64)], tolerance=1e-3)  # fmt: skip
    assert all(p.device.type == "cuda" for p in model.parameters())


@needs_cuda
def test_cudnn_autotunes_training_steps_but_not_validation(shapes, tmp_path, monkeypatch) -> None:  # noqa: F811
    seen: dict[str, set[bool]] = {"step": set(), "validate": set()}
    step, validate = Trainer.train_step, Trainer.validate

    def recording_step(self, images, masks):
        seen["step"].add(torch.backends.cudnn.benchmark)
        return step(self, images, masks)

    def recording_validate(self):
        seen["validate"].add(torch.backends.cudnn.benchmark)
        return validate(self)

    monkeypatch.setattr(Trainer, "train_step", recording_step)
    monkeypatch.setattr(Trainer, "validate", recording_validate)
    before = torch.backends.cudnn.benchmark
    train(_config(shapes, tmp_path, device="cuda"))
    assert seen == {"step": {True}, "validate": {False}}
    assert torch.backends.cudnn.benchmark == before


@needs_cuda
def test_fp16_nonfinite_step_is_skipped_by_the_grad_scaler(shapes, tmp_path, monkeypatch) -> None:  # noqa: F811
    """A NaN loss in fp16 leaves the weights as they were (the scaler skips the update) and is counted."""
    weights: list[dict[str, torch.Tensor]] = []
    step = Trainer.train_step

    def recording(self, images, masks):
        loss = step(self, images, masks)
        weights.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return loss

    monkeypatch.setattr(Trainer, "train_step", recording)
    _nan_loss_on_call(monkeypatch, bad_call=3)
    summary = train(_config(shapes, tmp_path / "skip", device="cuda", precision="fp16", skip_nonfinite=True))
    assert summary["nonfinite_skipped"] == 1
    for key, value in weights[1].items():  # step 3 (index 2) changed nothing
        assert torch.equal(weights[2][key], value), key
    assert all(math.isfinite(r["loss"]) for r in map(json.loads, (tmp_path / "skip" / "metrics.jsonl").open())
               if "loss" in r)  # fmt: skip


@needs_cuda
def test_resume_on_the_gpu_with_dropout_is_bit_identical(shapes, tmp_path, monkeypatch) -> None:  # noqa: F811
    """AlexNet's dropout draws from the CUDA generator: resume restores its state."""
    kw = dict(model="fcn32s_alexnet", iters=4, batch_size=2, crop_size=(32, 32), val_every=2, device="cuda")
    train(_config(shapes, tmp_path / "a", **kw))
    with monkeypatch.context() as m:
        _interrupt_at(3, m)
        with pytest.raises(KeyboardInterrupt):
            train(_config(shapes, tmp_path / "b", **kw))
    train(_config(shapes, tmp_path / "b", resume=True, **kw))
    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("a", "b"))
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
