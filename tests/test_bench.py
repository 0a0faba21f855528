"""Speed measurement: ``fcnseg bench`` reports every installed backend, and the comparison code of benchmarks/ is right.

The comparison code (``benchmarks/benchlib``, on ``sys.path`` through ``pythonpath`` in pyproject.toml): the baseline
FCN-8s computes fcnseg's caffe-layout FCN-8s exactly, the fast path computes fp32 eager's logits, FLOPs scale, the
suite script reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import suite
import torch

from benchlib.baseline import REFERENCE_CROPS, BaselineFCN8s, baseline_from_fcnseg
from benchlib.measure import Timing, agreement, run_counted, time_call
from benchlib.networks import build_network, inference_path
from fcnseg.cli.main import main
from fcnseg.core.checkpoint import make_checkpoint, save_checkpoint
from fcnseg.core.machine import MATRIX_FLAGS, processor_info, processor_line
from fcnseg.inference.engine import segment_logits
from fcnseg.inference.optimize import PackedConv2d, packed_bytes, prepare_for_inference
from fcnseg.inference.runtimes import available_backends
from fcnseg.models import create_model


@pytest.fixture(scope="module")
def caffe_fcn8s() -> torch.nn.Module:
    return build_network("fcn8s_vgg16", "caffe", num_classes=5, seed=0)


def test_baseline_matches_fcnseg_caffe_layout(caffe_fcn8s: torch.nn.Module) -> None:
    baseline = baseline_from_fcnseg(caffe_fcn8s)
    assert isinstance(baseline, BaselineFCN8s) and caffe_fcn8s.head.crops == list(REFERENCE_CROPS)
    x = torch.randn(1, 3, 37, 53)  # odd sizes: the crops depend on them
    with torch.no_grad():
        expected, got = caffe_fcn8s(x), baseline(x)
    assert got.shape == (1, 5, 37, 53)
    assert expected.abs().max() > 0  # the score layers were given weights: the comparison is not 0 == 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert not baseline.upscore8.weight.requires_grad and baseline.fc6.weight.requires_grad


def test_baseline_refuses_other_networks() -> None:
    with pytest.raises(ValueError, match="caffe layout"):
        baseline_from_fcnseg(create_model("fcn8s_vgg16", num_classes=3, layout="default"))
    with pytest.raises(ValueError, match="at-once"):
        baseline_from_fcnseg(create_model("fcn8s_vgg16", num_classes=3, layout="caffe", at_once=True))


def test_fast_path_agrees_with_fp32(caffe_fcn8s: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 40, 56)
    reference = inference_path("eager", caffe_fcn8s)[0](x)
    fast32 = inference_path("fast", caffe_fcn8s, precision="fp32")[0](x)
    same, diff = agreement(fast32, reference)
    assert same == 1.0 and diff < 1e-4 * reference.abs().max().item()
    same, _ = agreement(inference_path("fast", caffe_fcn8s, precision="bf16")[0](x), reference)
    assert same >= 0.98


@pytest.mark.parametrize("name", ["fcn8s_squeezenet1_1", "fcn8s_mobilenet_v2", "fcn8s_resnet18"])
def test_prepared_model_computes_the_same_logits(name: str) -> None:
    model = build_network(name, None, num_classes=4)
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # statistics worth folding
        norm.running_mean.normal_(0, 0.1)
        norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        expected = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = prepare_for_inference(model, "cpu", "fp32")
    got = segment_logits(fast, x.contiguous(memory_format=torch.channels_last), precision="fp32")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert any(isinstance(m, PackedConv2d) for m in fast.modules()) and packed_bytes(fast) > 0
    assert not any(isinstance(m, PackedConv2d) for m in model.modules())  # the original keeps its layers
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    packed = [m for m in fast.modules() if isinstance(m, PackedConv2d)]
    if name == "fcn8s_mobilenet_v2":  # Conv2d, BatchNorm2d, ReLU6 in one Sequential: folded and fused
        assert any(m.norm is not None and m.attr == "hardtanh" for m in packed)
    if name == "fcn8s_resnet18":  # BasicBlock calls conv1, bn1, relu in its forward: fused through torch.fx
        norms = [m for m in fast.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and {id(m) for m in norms} == {id(m.norm) for m in packed if m.norm is not None}
        blocks = [m for m in fast.modules() if isinstance(m, torch.fx.GraphModule)]
        calls = [node.target for block in blocks for node in block.graph.nodes if node.op != "call_module"]
        assert len(blocks) == 8 and "add" not in str(calls)  # the residual add runs inside the last convolution
    if name == "fcn8s_squeezenet1_1":  # Fire: each convolution's ReLU runs inside it
        assert all(m.attr == "relu" for m in fast.backbone.modules() if isinstance(m, PackedConv2d))


def test_prepared_model_follows_weight_updates() -> None:
    model = build_network("fcn8s_squeezenet1_1", None, num_classes=3)
    fast = prepare_for_inference(model, "cpu", "fp32")
    x = torch.randn(1, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    segment_logits(fast, x, precision="fp32")  # packs
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # in place: the packed copies are now stale
        expected = model(x)
    # Stale packed weights would be off by factors of 1.5 per layer; the tolerance is float32 rounding at this scale.
    got = segment_logits(fast, x, precision="fp32")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_flops_are_positive_and_scale_with_area() -> None:
    model = build_network("fcn8s_squeezenet1_1", None, num_classes=4)
    run, _ = inference_path("eager", model)
    _, small, small_bytes = run_counted(lambda: run(torch.zeros(1, 3, 64, 64)))
    _, large, large_bytes = run_counted(lambda: run(torch.zeros(1, 3, 128, 128)))
    assert small > 0 and small_bytes > 0
    assert 3.5 < large / small < 4.5  # four times the pixels, about four times the work
    assert large_bytes > 2 * small_bytes


def test_timing_statistics() -> None:
    timing = Timing((3.0, 1.0, 2.0, 10.0))
    assert timing.median == 2.5 and timing.min == 1.0 and timing.max == 10.0
    assert timing.iqr == (1.75, 4.75)
    calls = []
    measured = time_call(lambda: calls.append(1), reps=3, warmup=2)
    assert len(calls) == 5 and len(measured.seconds) == 3


def test_agreement() -> None:
    a = torch.zeros(1, 3, 2, 2)
    a[0, 1] = 1.0
    b = a.clone()
    b[0, 2, 0, 0] = 2.0  # one pixel of four changes class
    assert agreement(a, b) == (0.75, 2.0)


def test_suite_script_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "suite.json"
    args = ["--quick", "--models", "fcn8s_squeezenet1_1", "--sizes", "64x96", "--batches", "1", "2"]
    args += ["--paths", "eager", "fast", "--peers", "--reps", "1", "--train-size", "64x64", "--train-batch", "2"]
    assert suite.main([*args, "--matmul-size", "256", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"settings", "machine", "inference", "training"}
    assert set(result["machine"]["matmul_gflops"]) == {"fp32", "bf16"}
    rows = result["inference"]
    assert [(r["path"], r["precision"], r["batch"]) for r in rows] == [
        ("eager", "fp32", 1),
        ("eager", "fp32", 2),
        ("fast", "fp32", 1),
        ("fast", "fp32", 2),
        ("fast", "bf16", 1),
        ("fast", "bf16", 2),
    ]
    for row in rows:
        assert row["latency"]["median_s"] > 0 and row["gflops"] > 0 and row["peak_bytes"] > 0
        assert 0.98 <= row["argmax_agreement"] <= 1.0 and row["ratio_vs_baseline"] is None
    assert rows[0]["argmax_agreement"] == 1.0 and rows[0]["max_logit_diff"] == 0.0
    (train,) = result["training"]
    assert train["path"] == "fast" and train["images_per_s"] > 0 and train["batch"] == 2
    printed = capsys.readouterr().out
    assert "fcn8s_squeezenet1_1" in printed and f"processor: {result['machine']['processor']}" in printed
    assert set(result["machine"]["cpu_flags"]) == set(MATRIX_FLAGS)
    assert suite.main(["--models", "fcn8s_nonet"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_bench_times_every_installed_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--size", "64x64", "--reps", "1", "--batch", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "fcn4s_squeezenet1_1 (random weights)" and result["size"] == [64, 64]
    assert [r["backend"] for r in result["rows"]] == list(available_backends())
    for row in result["rows"]:
        assert row["latency"]["median_s"] > 0 and len(row["latency"]["all_s"]) == 1 and row["first_s"] > 0
        assert row["throughput"]["batch"] == 2 and row["throughput"]["images_per_s"] > 0
        assert row["computes_in"] in ("fp32", "bf16", "fp16") and row["device"] == "cpu"
    printed = capsys.readouterr().out
    assert f"processor: {result['processor']}" in printed and set(result["cpu_flags"]) == set(MATRIX_FLAGS)
    assert all(f"\n{backend} " in printed for backend in available_backends())


def test_bench_runs_a_checkpoint_of_other_bands(tmp_path: Path) -> None:
    """A 4-band checkpoint: the images are made with the model's bands, through the path `fcnseg predict` opens."""
    model = create_model("fcn8s_squeezenet1_1", num_classes=3, in_channels=4)
    classes = {"names": ["a", "b", "c"], "colors": [[0, 0, 0], [255, 0, 0], [0, 255, 0]]}
    save_checkpoint(make_checkpoint(model, classes=classes, mean=(0.1,) * 4, std=(0.2,) * 4), tmp_path / "m.pt")
    out = tmp_path / "bench.json"
    args = [str(tmp_path / "m.pt"), "--backends", "torch", "--device", "cpu", "--precision", "fp32", "--size", "40x48"]
    assert main(["bench", *args, "--reps", "1", "--batch", "2", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["backend"] == "torch" and row["computes_in"] == "fp32" and row["latency"]["median_s"] > 0


def test_bench_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(tmp_path / "missing.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "m.pt").touch()
    assert main(["bench", str(tmp_path / "m.pt"), "--model", "fcn8s_vgg16"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["bench", "--reps", "0"]) == 2


def test_processor_info_reads_model_name_and_matrix_flags() -> None:
    cpuinfo = (
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8\n\n"
        "processor\t: 1\nmodel name\t: another\nflags\t\t: fpu\n"
    )
    info = processor_info(cpuinfo)
    assert info["model_name"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["flags"] == {
        "amx_bf16": True,
        "amx_int8": True,
        "amx_tile": True,
        "avx512_bf16": True,
        "avx512_vnni": True,
        "avx_vnni": False,
    }
    assert processor_line(info).startswith("Intel(R) Xeon(R) Platinum 8480+; amx_bf16 yes, amx_int8 yes")
    zen4 = processor_info("model name\t: AMD EPYC\nflags\t: avx512_bf16 avx512_vnni\n")
    assert processor_line(zen4) == (
        "AMD EPYC; amx_bf16 no, amx_int8 no, amx_tile no, avx512_bf16 yes, avx512_vnni yes, avx_vnni no"
    )
    assert set(processor_info("")["flags"].values()) == {None}  # no /proc/cpuinfo: unknown, not "no"
