"""The one device / precision / memory-format policy (fcnseg.core.device) and the commands that share it."""

from __future__ import annotations

import argparse

import pytest
import torch
from conftest import cpu_native_bf16

from fcnseg.cli.main import build_parser
from fcnseg.core.device import (
    DEFAULT_DEVICE,
    DEVICE_HELP,
    autocast_dtype,
    cpu_has_native_bf16,
    memory_format,
    resolve_device,
)
from fcnseg.training.config import TrainConfig

HAS_CUDA = torch.cuda.is_available()


def test_auto_is_cuda_when_available_else_cpu() -> None:
    assert resolve_device("auto") == torch.device("cuda" if HAS_CUDA else "cpu")
    assert resolve_device() == resolve_device("auto")  # the default is auto


def test_named_devices_are_checked() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu0' is not a device"):
        resolve_device("gpu0")


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_an_error() -> None:
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device(name)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_index_beyond_the_gpus_is_an_error() -> None:
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="sees only"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_named_precisions_are_taken_as_given() -> None:
    assert autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert autocast_dtype("fp16", "cpu") is torch.float16
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("int8", "cpu")


def test_auto_precision_on_the_cpu_follows_its_bf16_flags() -> None:
    """Exactly bf16 where the CPU has AVX512-BF16 or AMX (read from /proc/cpuinfo, not from PyTorch), else fp32."""
    native = cpu_native_bf16()
    assert cpu_has_native_bf16() is native
    assert autocast_dtype("auto", "cpu") is (torch.bfloat16 if native else None)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_auto_precision_on_cuda_is_bf16_from_ampere_on() -> None:
    major, _ = torch.cuda.get_device_capability()  # bf16 tensor cores arrived with compute capability 8.0
    assert autocast_dtype("auto", "cuda") is (torch.bfloat16 if major >= 8 else None)


@pytest.mark.parametrize(
    ("capability", "expected"), [((7, 5), None), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)]
)
def test_auto_precision_on_cuda_skips_emulated_bf16(monkeypatch: pytest.MonkeyPatch, capability, expected) -> None:
    """A Turing GPU (7.5) emulates bf16, slower than fp16; torch.cuda.is_bf16_supported() says yes there anyway."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert autocast_dtype("auto", "cuda") is expected


def test_channels_last_on_the_cpu_only() -> None:
    assert memory_format("cpu") is torch.channels_last
    assert memory_format(torch.device("cuda")) is torch.contiguous_format  # a device name needs no GPU


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _device_option(name: str) -> argparse.Action:
    return next(a for a in _subparser(name)._actions if "--device" in a.option_strings)


def test_train_eval_predict_share_the_device_flag() -> None:
    """Same default and help: ``train`` leaves flags unset (config precedence) and TrainConfig holds the default."""
    for name in ("train", "eval", "predict"):
        option = _device_option(name)
        assert DEVICE_HELP in option.help and "default: auto" in option.help, name
    assert _device_option("eval").default == _device_option("predict").default == DEFAULT_DEVICE == "auto"
    assert TrainConfig.__dataclass_fields__["device"].default == DEFAULT_DEVICE


def test_train_config_rejects_a_bad_device() -> None:
    with pytest.raises(ValueError, match="is not a device"):
        TrainConfig(data_root="x", device="gpu").resolved()
