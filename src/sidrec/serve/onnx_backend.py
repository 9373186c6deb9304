"""The ONNX Runtime step model lives in `sidrec.decode.onnx_backend`; re-exported here."""

from sidrec.decode.onnx_backend import OnnxStepModel  # noqa: F401
