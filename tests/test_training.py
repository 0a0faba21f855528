"""Training: loss against hand-computed values, parameter groups, schedules, config precedence, exact resume,
staged initialisation, checkpoints and the ``fcnseg train`` command on a tiny generated dataset."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from fcnseg import create_model
from fcnseg.cli.main import main
from fcnseg.core.checkpoint import load_checkpoint
from fcnseg.data.synthetic import write_shapes_dataset
from fcnseg.models import load_init_weights, model_from_checkpoint
from fcnseg.training.average import WeightAverage
from fcnseg.training.config import PRESETS, TrainConfig
from fcnseg.training.data import EpochBatches
from fcnseg.training.loop import Trainer, train
from fcnseg.training.loss import lovasz_softmax, segmentation_loss
from fcnseg.training.optim import lr_factor, parameter_groups
from fcnseg.training.step import SGDStep


def test_loss_ignores_void_and_matches_hand_computed_values() -> None:
    # Three pixels: logits (0, 0) target 0 -> ln 2; logits (ln 3, 0) target 0 -> ln(4/3); the third is void.
    logits = torch.tensor([[0.0, math.log(3), 5.0], [0.0, 0.0, -5.0]]).reshape(1, 2, 1, 3)
    target = torch.tensor([[[0, 0, 255]]])
    expected_sum = math.log(2) + math.log(4 / 3)
    assert segmentation_loss(logits, target, normalization="sum").item() == pytest.approx(expected_sum)
    assert segmentation_loss(logits, target).item() == pytest.approx(expected_sum / 2)
    # Class weights: pixel 1 has target 0 (w=2), so does pixel 2; make pixel 2 class 1 (w=0.5):
    # loss(pixel 2, target 1) = -ln(1/4) = ln 4; weighted mean = (2 ln 2 + 0.5 ln 4) / (2 + 0.5)
    target = torch.tensor([[[0, 1, 255]]])
    weighted = segmentation_loss(logits, target, class_weights=torch.tensor([2.0, 0.5]))
    assert weighted.item() == pytest.approx((2 * math.log(2) + 0.5 * math.log(4)) / 2.5)
    all_void = segmentation_loss(logits, torch.full((1, 1, 3), 255))
    assert all_void.item() == 0.0


def test_hard_fraction_keeps_the_hardest_labelled_pixels_by_hand() -> None:
    # Losses: (0, 0)->0: ln 2; (ln 3, 0)->0: ln(4/3); (ln 3, 0)->1: ln 4; the fourth pixel is void (its loss, ln 4 +
    # 10, would be the largest). Half of 3 labelled pixels -> ceil(1.5) = 2 kept: ln 4 and ln 2.
    logits = torch.tensor([[0.0, math.log(3), math.log(3), 0.0], [0.0, 0.0, 0.0, 10.0]]).reshape(1, 2, 1, 4)
    target = torch.tensor([[[0, 0, 1, 255]]])
    hard = segmentation_loss(logits, target, hard_fraction=0.5)
    assert hard.item() == pytest.approx((math.log(4) + math.log(2)) / 2)
    # Weighted [2, 0.5]: 2 ln 2 = 1.39, 2 ln(4/3) = 0.58, 0.5 ln 4 = 0.69 -> keeps the first and the third.
    weighted = segmentation_loss(logits, target, class_weights=torch.tensor([2.0, 0.5]), hard_fraction=0.5)
    assert weighted.item() == pytest.approx((2 * math.log(2) + 0.5 * math.log(4)) / 2.5)
    assert segmentation_loss(logits, target, hard_fraction=1.0).item() == pytest.approx(
        (math.log(2) + math.log(4 / 3) + math.log(4)) / 3
    )
    with pytest.raises(ValueError, match="hard_fraction"):
        segmentation_loss(logits, target, hard_fraction=0.0)


def _confident(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits whose softmax is one-hot (to float precision) at ``classes`` (N, H, W)."""
    return 100 * torch.nn.functional.one_hot(classes, num_classes).movedim(-1, 1).float()


def test_lovasz_softmax_is_one_minus_the_mean_iou_of_present_classes_at_one_hot_predictions() -> None:
    # Pixels 0..5 in reading order. Truth 0 0 1 / 1 2 2, prediction 0 1 1 / 1 2 0 (class 3 never appears):
    # class 0: truth {0, 1}, predicted {0, 5}: IoU 1/3; class 1: {2, 3} vs {1, 2, 3}: 2/3; class 2: {4, 5} vs {4}: 1/2.
    truth = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
    logits = _confident(torch.tensor([[[0, 1, 1], [1, 2, 0]]]), 4)
    assert lovasz_softmax(logits, truth).item() == pytest.approx(1 - (1 / 3 + 2 / 3 + 1 / 2) / 3)
    # Pixel 0 void: class 0 becomes {1} vs {5}, IoU 0; the others are unchanged.
    void = truth.clone()
    void[0, 0, 0] = 255
    assert lovasz_softmax(logits, void).item() == pytest.approx(1 - (0 + 2 / 3 + 1 / 2) / 3)
    assert lovasz_softmax(_confident(truth, 4), truth).item() == pytest.approx(0, abs=1e-6)
    soft = torch.zeros(1, 4, 2, 3, requires_grad=True)
    lovasz_softmax(soft, truth).backward()
    assert soft.grad[0, 0, 0, 0] < 0 < soft.grad[0, 3, 0, 0]  # raise the true class, lower an absent one
    all_void = lovasz_softmax(soft, torch.full((1, 2, 3), 255))
    assert all_void.item() == 0 and all_void.requires_grad


def test_the_lovasz_term_is_added_on_one_of_sixteen_pixel_phases_per_step() -> None:
    torch.manual_seed(0)
    model = create_model("fcn32s_resnet18", num_classes=3).eval()
    reference = copy.deepcopy(model)
    images, masks = torch.randn(1, 3, 32, 32), torch.randint(0, 3, (1, 32, 32))
    masks[0, :4] = 255
    step = SGDStep(
        model, TrainConfig(precision="fp32", device="cpu", iters=10, lovasz=0.5, warmup=0), torch.device("cpu")
    )
    value = step(images, masks, step=6, total=10)  # phase 6 = row 1, column 2 of every 4x4 block
    with torch.no_grad():
        logits = reference(images)
    expected = segmentation_loss(logits, masks) + 0.5 * lovasz_softmax(logits[..., 1::4, 2::4], masks[:, 1::4, 2::4])
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)
    with pytest.raises(ValueError, match="--lovasz"):
        TrainConfig(lovasz=-1.0, data_root="x").resolved()


def test_parameter_groups_follow_the_paper() -> None:
    model = create_model("fcn8s_resnet18", num_classes=3)
    groups = parameter_groups(model, lr=0.01, weight_decay=5e-4)
    by_mult = {g["lr_mult"]: g for g in groups if g["weight_decay"] > 0 or g["lr_mult"] == 2.0}
    assert by_mult[2.0]["lr"] == pytest.approx(0.02) and by_mult[2.0]["weight_decay"] == 0
    biases = {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    assert {id(p) for p in by_mult[2.0]["params"]} == biases
    in_groups = {id(p) for g in groups for p in g["params"]}
    fixed = [p for p in model.parameters() if not p.requires_grad]
    assert fixed and not any(id(p) in in_groups for p in fixed)  # the bilinear upsampling stays fixed
    assert len(in_groups) == sum(p.requires_grad for p in model.parameters())


def test_learning_rate_schedules() -> None:
    assert lr_factor(0, total=100, schedule="fixed") == 1.0
    assert lr_factor(50, total=100, schedule="poly", power=0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(100, total=100, schedule="poly") == 0.0
    assert lr_factor(4, total=100, schedule="fixed", warmup=10) == pytest.approx(0.5)


def test_epoch_batches_are_seeded_permutations_and_resume_in_place() -> None:
    stream = iter(EpochBatches(10, 4, seed=3))
    first = [next(stream) for _ in range(4)]  # two batches per epoch (the incomplete third is dropped)
    assert len({i for _, i in first[0] + first[1]}) == 8 and {e for e, _ in first[2]} == {1}
    resumed = EpochBatches(10, 4, seed=3)
    resumed.advance(first[0])
    assert next(iter(resumed)) == first[1]
    resumed.advance(first[1])
    assert (resumed.start_epoch, resumed.start_position) == (1, 0)


def test_camvid_preset_is_the_modern_one_with_its_steps_hardest_pixels_and_lovasz_term() -> None:
    from fcnseg.cli.main import build_parser
    from fcnseg.training.config import config_from_args

    parser = build_parser()

    def config(*flags: str):
        return config_from_args(parser.parse_args(["train", "--data-root", "d", *flags]))

    modern, camvid = config(), config("--preset", "camvid")
    assert (modern.hard_fraction, modern.lovasz, modern.iters) == (1.0, 0.0, 2000)
    assert (camvid.hard_fraction, camvid.lovasz, camvid.iters, camvid.epochs) == (0.25, 1.0, 8000, None)
    assert (modern.test_scales, camvid.test_scales) == ((), (1.0, 1.25, 1.5, 1.75, 2.0))
    assert (modern.scale_range, camvid.scale_range) == ((0.5, 2.0), (0.75, 2.25))
    assert config("--preset", "camvid", "--lovasz", "0").lovasz == 0.0  # a flag overrides the preset
    assert camvid.lr == modern.lr and camvid.warmup == modern.warmup == 100
    by_epochs = config("--preset", "camvid", "--epochs", "3")  # the preset's step count yields to --epochs
    assert (by_epochs.iters, by_epochs.epochs) == (None, 3)
    with pytest.raises(ValueError, match="--iters or --epochs, not both"):
        config("--iters", "5", "--epochs", "3")


def test_config_precedence_defaults_preset_file_flags(tmp_path: Path) -> None:
    from fcnseg.cli.main import build_parser
    from fcnseg.training.config import config_from_args

    (tmp_path / "c.toml").write_text('preset = "paper"\nlr = 1e-4\nbatch-size = 2\n')
    (tmp_path / "c.yaml").write_text("lr: 0.5\n")
    parser = build_parser()
    args = parser.parse_args(["train", "--data-root", "d", "--config", str(tmp_path / "c.toml"), "--batch-size", "3"])
    config = config_from_args(args)
    assert config.momentum == 0.99 and config.schedule == "fixed" and config.loss_norm == "sum"  # preset
    assert config.lr == 1e-4  # file over preset
    assert config.batch_size == 3  # flag over file
    assert config.crop_size is None  # the paper trains on whole images
    assert (
        config_from_args(parser.parse_args(["train", "--data-root", "d", "--config", str(tmp_path / "c.yaml")])).lr
        == 0.5
    )
    (tmp_path / "bad.toml").write_text("learning_rate = 1\n")
    with pytest.raises(ValueError, match="unknown keys \\['learning_rate'\\]"):
        config_from_args(parser.parse_args(["train", "--data-root", "d", "--config", str(tmp_path / "bad.toml")]))
    (tmp_path / "cosine.toml").write_text('schedule = "cosine"\n')
    with pytest.raises(ValueError, match="--schedule must be one of"):
        config_from_args(parser.parse_args(["train", "--data-root", "d", "--config", str(tmp_path / "cosine.toml")]))


def test_one_crop_size_is_a_square_from_a_flag_or_a_config_file(tmp_path: Path) -> None:
    from fcnseg.cli.main import build_parser
    from fcnseg.training.config import config_from_args

    parser = build_parser()

    def config(*flags: str):
        return config_from_args(parser.parse_args(["train", "--data-root", "d", *flags]))

    (tmp_path / "c.yaml").write_text("crop_size: 96\n")
    assert config("--crop-size", "96").crop_size == (96, 96)
    assert config("--crop-size", "96", "128").crop_size == (96, 128)
    assert config("--config", str(tmp_path / "c.yaml")).crop_size == (96, 96)
    assert config("--crop-size", "none").crop_size is None
    with pytest.raises(ValueError, match="--crop-size takes 1 or 2 values"):
        config("--crop-size", "1", "2", "3")
    with pytest.raises(ValueError, match="--scale-range takes 2 values"):
        config("--scale-range", "1")


def test_every_config_key_is_a_grouped_flag_or_a_config_file_key(tmp_path: Path) -> None:
    import dataclasses

    from fcnseg.cli.main import build_parser
    from fcnseg.training.config import CONFIG_ONLY, FLAG_GROUPS, config_from_args

    grouped = [name for names in FLAG_GROUPS.values() for name in names]
    assert sorted(grouped + list(CONFIG_ONLY)) == sorted(f.name for f in dataclasses.fields(TrainConfig))
    parser = build_parser("train")
    with pytest.raises(SystemExit):  # the paper's knobs are no flags...
        parser.parse_args(["train", "--data-root", "d", "--input-scale", "2"])
    (tmp_path / "old.json").write_text(json.dumps({"input_scale": 2.0, "poly_power": 1.0, "hflip": False}))
    config = config_from_args(parser.parse_args(["train", "--data-root", "d", "--config", str(tmp_path / "old.json")]))
    assert (config.input_scale, config.poly_power, config.hflip) == (2.0, 1.0, False)  # ...but config-file keys


def test_weight_average_matches_hand_computed_values() -> None:
    # Weights 0, then 1, 2, 3 after three steps; decay 0.9 is capped by (1 + n) / (10 + n) at update n:
    # 2/11 * 0 + 9/11 * 1 = 9/11; 1/4 * 9/11 + 3/4 * 2 = 75/44; 4/13 * 75/44 + 9/13 * 3 = 1488/572.
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    model[0].weight.data.fill_(0.0)
    average = WeightAverage(model, decay=0.9)
    for step, expected in zip((1, 2, 3), (9 / 11, 75 / 44, 1488 / 572), strict=True):
        model[0].weight.data.fill_(float(step))
        model[1].num_batches_tracked.fill_(10 * step)
        average.update(model)
        assert average.model[0].weight.item() == pytest.approx(expected, rel=1e-6)
        assert average.model[1].num_batches_tracked.item() == 10 * step  # counters are copied, not averaged
    assert not average.model.training and not average.model[0].weight.requires_grad
    for _ in range(200):  # past update 80 the decay itself holds: the average of a constant converges to it
        average.update(model)
    assert average.model[0].weight.item() == pytest.approx(3.0, abs=1e-6)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=12, num_val=4, size=(64, 80))


def _config(shapes: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        model="fcn8s_resnet18",
        dataset="folder",
        data_root=str(shapes),
        classes=str(shapes / "classes.txt"),
        out=str(out),
        iters=6,
        batch_size=4,
        crop_size=(48, 64),
        lr=0.01,
        val_every=3,
        log_every=1,
        workers=0,
        precision="fp32",
        device="cpu",
    )
    return TrainConfig(**(base | kw)).resolved()


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_continues_exactly_where_an_interrupted_run_stopped(
    shapes: Path, tmp_path: Path, monkeypatch, ema: float
) -> None:
    straight = train(_config(shapes, tmp_path / "a", ema=ema))
    assert straight["steps"] == 6

    step = Trainer.train_step

    def interrupt_at_4(self, images, masks):
        if self.step == 4:
            raise KeyboardInterrupt
        return step(self, images, masks)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", interrupt_at_4)
        with pytest.raises(KeyboardInterrupt):
            train(_config(shapes, tmp_path / "b", ema=ema))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["train_state"]["step"] == 4
    train(_config(shapes, tmp_path / "b", resume=True, ema=ema))

    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("a", "b"))
    assert b["train_state"]["step"] == 6
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
    if ema:  # the weight average resumes too
        assert b["train_state"]["average"]["updates"] == 6
        for key, value in a["train_state"]["average"]["weights"].items():
            torch.testing.assert_close(b["train_state"]["average"]["weights"][key], value, rtol=0, atol=0, msg=key)
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]  # no duplicated or missing rows


def _interrupt_at(step_number: int, monkeypatch: pytest.MonkeyPatch):
    """Patch ``Trainer.train_step`` to raise KeyboardInterrupt (as Ctrl-C would) before step ``step_number``."""
    step = Trainer.train_step

    def interrupted(self, images, masks):
        if self.step == step_number:
            raise KeyboardInterrupt
        return step(self, images, masks)

    monkeypatch.setattr(Trainer, "train_step", interrupted)


@pytest.mark.slow
def test_resume_mid_epoch_on_a_dropout_net_is_bit_identical(shapes: Path, tmp_path: Path, monkeypatch) -> None:
    # AlexNet's fc6/fc7 dropout draws from the global RNG at every step, so the resumed run only matches when the
    # RNG state is saved and restored, and nothing else draws from it in between (e.g. a DataLoader's base seed).
    # Interrupted after step 3 (after the validation at step 2), inside the first epoch (6 batches of 2).
    kw = dict(model="fcn32s_alexnet", iters=4, batch_size=2, crop_size=(32, 32), val_every=2)
    train(_config(shapes, tmp_path / "a", **kw))
    with monkeypatch.context() as m:
        _interrupt_at(3, m)
        with pytest.raises(KeyboardInterrupt):
            train(_config(shapes, tmp_path / "b", **kw))
    state = load_checkpoint(tmp_path / "b" / "last.pt")["train_state"]
    assert (state["step"], state["epoch"], state["position"]) == (3, 0, 6)
    train(_config(shapes, tmp_path / "b", resume=True, **kw))
    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("a", "b"))
    assert b["train_state"]["step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_staged_training_starts_each_stage_from_the_previous(shapes: Path, tmp_path: Path) -> None:
    summary = train(_config(shapes, tmp_path, model="fcn8s_resnet18", staged=True, iters=2, val_every=2))
    assert list(summary["stages"]) == ["fcn32s", "fcn16s", "fcn8s"]
    coarse = load_checkpoint(tmp_path / "fcn32s" / "best.pt")
    assert load_checkpoint(tmp_path / "fcn16s" / "best.pt")["config"]["init_from"] == str(
        tmp_path / "fcn32s" / "best.pt"
    )
    finer = create_model("fcn16s_resnet18", num_classes=5)
    fresh = load_init_weights(finer, coarse)
    assert all(k.startswith(("head.skips.", "head.upscore.")) for k in fresh)
    torch.testing.assert_close(finer.head.score_fr.weight, coarse["state_dict"]["head.score_fr.weight"])
    assert finer.head.skips[0].score.weight.abs().sum() == 0


def test_staged_resume_continues_the_interrupted_stage_and_starts_later_ones_fresh(
    shapes: Path, tmp_path: Path, monkeypatch
) -> None:
    # Reference: the same staged run without interruption. The interrupted run stops inside FCN-16s (its step 1);
    # --resume must skip the finished FCN-32s, continue FCN-16s from its last.pt and start FCN-8s from 16s's best.pt.
    kw = dict(model="fcn8s_resnet18", staged=True, iters=2, val_every=2, stage_lr_factor=0.1)
    straight = train(_config(shapes, tmp_path / "a", **kw))
    calls = {"n": 0}
    step = Trainer.train_step

    def interrupt_in_16s(self, images, masks):
        calls["n"] += 1
        if calls["n"] == 4:  # steps 1-2 are FCN-32s, step 3 is FCN-16s's first
            raise KeyboardInterrupt
        return step(self, images, masks)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", interrupt_in_16s)
        with pytest.raises(KeyboardInterrupt):
            train(_config(shapes, tmp_path / "b", **kw))
    assert not (tmp_path / "b" / "fcn8s").exists()
    resumed = train(_config(shapes, tmp_path / "b", resume=True, **kw))
    assert resumed["stages"]["fcn32s"] == straight["stages"]["fcn32s"] | {"train_seconds": ANY_SECONDS}
    for stage in ("fcn32s", "fcn16s", "fcn8s"):
        a, b = (load_checkpoint(tmp_path / run / stage / "last.pt") for run in ("a", "b"))
        assert b["train_state"]["step"] == 2, stage
        for key, value in a["state_dict"].items():
            torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=f"{stage} {key}")
    lrs = [json.loads((tmp_path / "b" / s / "config.json").read_text())["lr"] for s in ("fcn32s", "fcn16s", "fcn8s")]
    assert lrs == pytest.approx([0.01, 0.001, 0.0001])


class _AnySeconds:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, float)


ANY_SECONDS = _AnySeconds()


def test_paper_preset_divides_the_learning_rate_by_100_per_stage_like_the_reference_solvers() -> None:
    from fcnseg.training.staged import stage_configs

    # voc-fcn32s/solver.prototxt base_lr 1e-10, voc-fcn16s 1e-12, voc-fcn8s 1e-14 (the reference's VGG16 nets).
    config = TrainConfig(**(PRESETS["paper"] | dict(model="fcn8s_vgg16", data_root="d", staged=True))).resolved()
    stages = stage_configs(config)
    assert [s.model for s in stages] == ["fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16"]
    assert [s.lr for s in stages] == pytest.approx([1e-10, 1e-12, 1e-14], rel=1e-9)
    modern = stage_configs(TrainConfig(model="fcn16s_resnet18", data_root="d", staged=True, lr=0.01).resolved())
    assert [s.lr for s in modern] == [0.01, 0.01]
    # SqueezeNet's features end at stride 16, so its stages start at FCN-16s; FCN-4s adds one stage after FCN-8s.
    squeeze = stage_configs(TrainConfig(model="fcn4s_squeezenet1_1", data_root="d", staged=True).resolved())
    assert [s.model for s in squeeze] == ["fcn16s_squeezenet1_1", "fcn8s_squeezenet1_1", "fcn4s_squeezenet1_1"]


def test_input_scale_reproduces_caffe_steps_on_the_image_convolution() -> None:
    # Reference: a two-layer net trained the Caffe way, input x_c = s * x (0..255 scale), plain torch SGD with the
    # paper's groups (biases 2x lr, no decay), summed loss, momentum 0.99. Ours: the same function on x, whose first
    # convolution holds s * W_c, trained through make_optimizer(input_scale=s). After each step the first weights
    # must still be s times the reference's and all other parameters equal to it.
    from fcnseg.training.optim import make_optimizer

    s, lr, decay = 57.4, 1e-4, 5e-4
    torch.manual_seed(0)
    caffe = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    ours = copy.deepcopy(caffe)
    with torch.no_grad():
        ours[0].weight.mul_(s)
    weights = [p for n, p in caffe.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in caffe.named_parameters() if n.endswith("bias")]
    reference = torch.optim.SGD(
        [{"params": weights, "weight_decay": decay, "lr": lr}, {"params": biases, "weight_decay": 0.0, "lr": 2 * lr}],
        lr=lr,
        momentum=0.99,
    )
    optimizer = make_optimizer(ours, lr=lr, momentum=0.99, weight_decay=decay, input_scale=s)
    for _ in range(3):
        x = torch.rand(2, 3, 9, 9) - 0.5
        target = torch.randint(0, 2, (2, 7, 7))
        for net, opt, inp in ((caffe, reference, s * x), (ours, optimizer, x)):
            opt.zero_grad()
            segmentation_loss(net(inp), target, normalization="sum").backward()
            opt.step()
        torch.testing.assert_close(ours[0].weight / s, caffe[0].weight, rtol=1e-4, atol=1e-6)
        for (name, p), q in zip(list(ours.named_parameters())[1:], list(caffe.parameters())[1:], strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


def test_training_does_not_keep_decoded_images_unless_asked(shapes: Path, tmp_path: Path) -> None:
    # A cache of every decoded pair, per worker, is 25 GB per worker for Cityscapes: off unless --cache is given.
    base = Trainer(_config(shapes, tmp_path / "a")).train_set.base
    assert base.load(0)[0] is not base.load(0)[0]  # decoded afresh each time
    cached = Trainer(_config(shapes, tmp_path / "b", cache=True)).train_set.base
    assert cached.load(0)[0] is cached.load(0)[0]


def test_train_command_writes_a_complete_run_folder(shapes: Path, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model: fcn8s_squeezenet1_1\ndataset: folder\ndata-root: {shapes}\nclasses: {shapes}/classes.txt\n"
    )
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--out",
            str(out),
            "--iters",
            "4",
            "--batch-size",
            "2",
            "--crop-size",
            "48",
            "48",
            "--val-every",
            "2",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    for name in ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "config.json", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["model"]["name"] == "fcn8s_squeezenet1_1"
    assert ckpt["classes"]["names"][4] == "framed square"
    assert "train_state" not in ckpt and 0 <= ckpt["metrics"]["mean_iou"] <= 1
    model = model_from_checkpoint(ckpt)
    x = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        assert model(x).shape == (1, 5, 37, 53)

    # The checkpoint alone drives evaluation and prediction.
    report = tmp_path / "val.json"
    args = ["--dataset", "folder", "--data-root", str(shapes), "--split", "val", "--classes", f"{shapes}/classes.txt"]
    assert main(["eval", str(out / "best.pt"), *args, "--json", str(report), "--no-progress", "--workers", "0"]) == 0
    metrics = json.loads(report.read_text())
    assert {"pixel_acc", "mean_acc", "mean_iou", "fw_iou", "per_class"} <= set(metrics)
    assert [c["name"] for c in metrics["per_class"]][:2] == ["background", "circle"]
    image = next((shapes / "images").glob("val_*.png"))
    assert main(["predict", str(out / "best.pt"), str(image), "--out", str(tmp_path / "pred")]) == 0
    from PIL import Image

    mask = Image.open(tmp_path / "pred" / image.name)
    assert mask.mode == "P" and mask.size == Image.open(image).size
    assert mask.getpalette()[3:6] == ckpt["classes"]["colors"][1]


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt. is not an fcnseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_bad_arguments_exit_with_a_message(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["train", "--data-root", str(tmp_path / "missing"), "--dataset", "camvid"]) == 2
    assert "missing" in capsys.readouterr().err


def test_weight_average_is_what_is_validated_and_kept_as_best(shapes: Path, tmp_path: Path, monkeypatch) -> None:
    """With `ema`, best.pt holds the running average of the weights after each step, the logged validation is the
    average's (as `fcnseg eval` scores best.pt), and the last weights are scored beside it and kept in last.pt."""
    snapshots = []  # the weights before the first step and after each one
    step = Trainer.train_step

    def recorded(self, images, masks):
        if not snapshots:
            snapshots.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        loss = step(self, images, masks)
        snapshots.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return loss

    monkeypatch.setattr(Trainer, "train_step", recorded)
    out = tmp_path / "run"
    train(_config(shapes, out, ema=0.5, val_every=6))
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    expected = snapshots[0]  # the average by its definition: a_n = d_n a_(n-1) + (1 - d_n) w_n
    for n, weights in enumerate(snapshots[1:], start=1):
        keep = min(0.5, (1 + n) / (10 + n))
        expected = {k: keep * a + (1 - keep) * weights[k] if a.is_floating_point() else weights[k]
                    for k, a in expected.items()}  # fmt: skip
    assert len(snapshots) == 7 and last["train_state"]["average"]["updates"] == 6
    for key, value in expected.items():
        torch.testing.assert_close(best["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(last["state_dict"][key], snapshots[-1][key], rtol=0, atol=0, msg=key)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if "val_mean_iou" in r][-1]
    assert "val_last_mean_iou" in final
    argv = ["eval", "--backend", "torch", "--precision", "fp32", "--device", "cpu", "--no-progress"]
    for ckpt, key in (("best.pt", "val_mean_iou"), ("last.pt", "val_last_mean_iou")):
        report = tmp_path / f"{ckpt}.json"
        assert main([argv[0], str(out / ckpt), *argv[1:], "--json", str(report)]) == 0
        assert json.loads(report.read_text())["mean_iou"] == pytest.approx(final[key], abs=1e-9)
    assert any(not torch.equal(best["state_dict"][k], last["state_dict"][k]) for k in best["state_dict"])


def test_test_scales_are_chosen_on_validation_and_become_the_checkpoints_default(shapes: Path, tmp_path: Path) -> None:
    """With `test_scales` the run scores best.pt on the validation split at each scale, records the best in it, and
    predict, eval, serve and exports then run at that scale unless told otherwise."""
    from fcnseg.inference.export import export_checkpoint
    from fcnseg.inference.predictor import Predictor

    out = tmp_path / "run"
    scores = train(_config(shapes, out, test_scales=(0.75, 1.5, 1.0)))["val_mean_iou_by_test_scale"]
    chosen = load_checkpoint(out / "best.pt")["inference"]["scales"]
    assert list(scores) == [0.75, 1.5, 1.0] and chosen == [max(scores, key=scores.__getitem__)]
    argv = ["eval", str(out / "best.pt"), "--backend", "torch", "--precision", "fp32", "--device", "cpu"]
    for scale, miou in [*scores.items(), (None, scores[chosen[0]])]:  # None: no --scales, the recorded one
        report = tmp_path / f"{scale}.json"
        assert main([*argv, "--json", str(report), "--no-progress", *(["--scales", str(scale)] if scale else [])]) == 0
        assert json.loads(report.read_text())["mean_iou"] == pytest.approx(miou, abs=1e-9)  # eval's own path
    assert Predictor.from_checkpoint(out / "best.pt", backend="torch").scales == tuple(chosen)
    assert Predictor.from_checkpoint(out / "best.pt", backend="torch", scales=(1.0,)).scales == (1.0,)
    export_checkpoint(out / "best.pt", "onnx", tmp_path / "m.onnx")
    if importlib.util.find_spec("onnxruntime"):
        assert Predictor.from_checkpoint(tmp_path / "m.onnx", backend="onnxruntime").scales == tuple(chosen)


def test_without_validation_one_test_scale_is_recorded_as_given_and_several_none(
    shapes: Path, tmp_path: Path, caplog
) -> None:
    """A run on every image (no validation split) cannot choose a scale: a single `test_scales` entry (chosen on
    validation by an earlier run) is recorded in best.pt as given; several are not chosen among, and the log says so."""
    from fcnseg.inference.predictor import Predictor

    train(_config(shapes, tmp_path / "one", train_split="all", val_split="", test_scales=(1.5,)))
    assert load_checkpoint(tmp_path / "one" / "best.pt")["inference"]["scales"] == [1.5]
    assert Predictor.from_checkpoint(tmp_path / "one" / "best.pt", backend="torch").scales == (1.5,)
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        train(_config(shapes, tmp_path / "two", train_split="all", val_split="", test_scales=(1.0, 1.5)))
    assert "inference" not in load_checkpoint(tmp_path / "two" / "best.pt")
    assert "no validation split to choose among test_scales [1.0, 1.5]" in caplog.text
