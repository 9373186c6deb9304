"""Inference backends: one step model per backend, all driven by the same constrained beam search.

- `torch`: the Hugging Face model as trained (fp32 by default; bf16/fp16 with `dtype`), CPU or GPU.
- `int8`: PyTorch dynamic quantization (`torch.ao.quantization.quantize_dynamic`, qint8) of the `nn.Linear` layers:
  int8 weights (per output channel), activations quantized on the fly. CPU only. The MLP's output projection
  (`down_proj`) stays fp32: its input, act(gate) * up, is heavy-tailed, and quantize_dynamic scales activations
  per tensor (one scale for the whole batch, 7-bit on x86), which there cost most of the ranking error: on the CPU
  model, quantizing it too moved HR@10 by -0.0036 on 1,400 test rows against -0.0007 without it, for ~10% more speed.
- `onnx`: the model's step function exported with `torch.onnx` and run by ONNX Runtime (`onnx_backend`). CPU only.

`bench/inference_backends.py` measures speed and ranking quality of each against fp32 on the same rows.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from sidrec.decode.beam import HFStepModel
from sidrec.errors import SidrecError

BACKENDS = ("torch", "int8", "onnx")


INT8_SKIP = ("down_proj",)


def quantize_int8(model: nn.Module, skip: tuple[str, ...] = INT8_SKIP) -> nn.Module:
    """Dynamic int8 quantization (per-channel weights) of the model's `nn.Linear` layers except those whose name ends
    with one of `skip`; in place, returns the quantized model."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and not name.endswith(tuple(skip))}
    with warnings.catch_warnings():
        # torch.ao.quantization and quantized tensors are deprecated in favour of torchao, not yet removed
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def check_backend(backend: str, device: str | None, dtype: str) -> str | None:
    """The device `backend` runs on; a SidrecError for an unknown backend or settings it cannot run with."""
    if backend not in BACKENDS:
        raise SidrecError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return device
    if device not in (None, "cpu"):
        raise SidrecError(f"backend={backend!r} runs on the CPU only; got device={device!r} (use backend='torch')")
    if dtype != "fp32":
        raise SidrecError(f"backend={backend!r} starts from the fp32 model; got dtype={dtype!r}")
    return "cpu"


def step_model(model: nn.Module, backend: str = "torch", threads: int | None = None,
               onnx_dir: str | Path | None = None):
    """The step model `constrained_beam_search` calls, for a loaded HF model on `backend` (see `check_backend`).

    `onnx_dir`: where the exported graph is written (a temporary folder, removed once loaded, when None).
    """
    if backend == "torch":
        return HFStepModel(model)
    if backend == "int8":
        return HFStepModel(quantize_int8(model))

    from sidrec.decode.onnx_backend import OnnxStepModel

    if onnx_dir is not None:
        return OnnxStepModel.from_model(model, onnx_dir, threads=threads)
    with tempfile.TemporaryDirectory(prefix="sidrec-onnx-") as tmp:  # the session holds the graph once created
        return OnnxStepModel.from_model(model, tmp, threads=threads)
