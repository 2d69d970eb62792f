"""The device a run uses, and moving models and splits onto it."""

from __future__ import annotations

import platform

import torch

from ..core.errors import BenchError
from ..store import EpisodeView


def resolve_device(name: str = "auto") -> torch.device:
    """The device to run on, with the CUDA numerics every run and measurement here uses (TF32 allowed,
    cuDNN autotuning), so records, verification and `bench perf` agree."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BenchError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise BenchError(f"--device {name!r}: metabench runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"--device {name}: no CUDA device is visible here. Use --device cpu or auto.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BenchError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return dev


def place(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move a model to the device; on the CPU also to channels-last, which oneDNN convolves 2-3x faster
    (same results to float rounding). On CUDA the layout is left alone: no GPU measurement backs a change."""
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        return {
            "type": "cuda",
            "name": torch.cuda.get_device_name(device),
            "precision": "fp32 (TF32 matmul and convolution allowed)",
        }
    return {
        "type": "cpu",
        "name": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "precision": "fp32",
    }


def on_device_if_it_fits(view: EpisodeView, device: torch.device, headroom: float = 0.5) -> EpisodeView:
    """Keep a split's images on the GPU when they take at most `headroom` of its free memory; otherwise
    episodes are gathered on the CPU (pinned) and copied over, slower but never out of memory."""
    if device.type != "cuda":
        return view.to(device)
    free, _ = torch.cuda.mem_get_info(device)
    if view.images.numel() * view.images.element_size() <= headroom * free:
        return view.to(device)
    print(
        f"note: split {view.label} ({view.images.numel() / 2**30:.1f} GiB) stays in host memory; "
        f"episodes are copied to {device} as they are drawn"
    )
    return EpisodeView(
        view.label,
        view.images.pin_memory(),
        view.offsets,
        view.counts,
        view.classes,
        view.mean,
        view.std,
        view.data_fingerprint,
    )
