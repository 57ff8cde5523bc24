"""The exported feature graph run by ONNX Runtime or OpenVINO (no torch).

``backend``: ``onnxruntime`` or ``openvino`` (``auto``: OpenVINO when installed, else ONNX Runtime);
an ``.onnx`` graph runs on either, an OpenVINO IR (``.xml`` + ``.bin``) on OpenVINO only.
``precision``: ``f32`` (the default: equal to the torch path within 1e-4 relative) or ``bf16``
(OpenVINO only: its default on CPUs with AMX / AVX512-BF16, faster, scores differ; measure first).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from structcore_runtime.export_format import ExportError

BACKENDS = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("f32", "bf16")


def available_backends() -> list[str]:
    """Installed graph runtimes."""
    return [name for name in ("openvino", "onnxruntime") if importlib.util.find_spec(name) is not None]


def pick_backend(backend: str, graph: Path) -> str:
    """The backend that runs ``graph`` (``auto``: OpenVINO, else ONNX Runtime)."""
    if backend not in BACKENDS:
        raise ExportError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    installed = available_backends()
    wanted = ["openvino"] if graph.suffix == ".xml" else ["openvino", "onnxruntime"]
    if backend != "auto":
        wanted = [backend]
    if graph.suffix == ".xml" and backend == "onnxruntime":
        raise ExportError(
            f"{graph}: an OpenVINO graph runs on OpenVINO only (pip install openvino, or './runtime[openvino]')"
        )
    for name in wanted:
        if name in installed:
            return name
    extra = "openvino" if "openvino" in wanted else "onnx"
    package = "openvino" if extra == "openvino" else "onnxruntime"
    raise ExportError(
        f"{' or '.join(wanted)} is not installed: pip install {package} (or the runtime with its extra, "
        f"'./runtime[{extra}]')"
    )


class GraphSession:
    """One compiled graph: normalised images (B, 3, S, S) float32 -> patch vectors (B, P, D) float32.

    Attributes:
        backend: ``onnxruntime`` or ``openvino``.
        precision: ``f32`` or ``bf16``.
        input_shape: the graph's input shape, ``None`` for a dynamic dimension.
    """

    def __init__(
        self, path: str | Path, backend: str = "auto", precision: str = "f32", threads: int | None = None
    ) -> None:
        path = Path(path)
        if precision not in PRECISIONS:
            raise ExportError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.backend = pick_backend(backend, path)
        self.precision = precision
        if precision == "bf16" and self.backend != "openvino":
            raise ExportError("bf16 runs on OpenVINO only (--backend openvino)")
        self.path = path
        try:
            if self.backend == "onnxruntime":
                self._open_onnxruntime(path, threads)
            else:
                self._open_openvino(path, precision, threads)
        except ExportError:
            raise
        except Exception as error:  # the runtimes raise their own exception types on a damaged graph
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExportError(f"{path}: {self.backend} cannot load the graph ({first})") from error

    def _open_onnxruntime(self, path: Path, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._session: Any = session
        first = session.get_inputs()[0]
        self._input_name = first.name
        self.input_shape = tuple(v if isinstance(v, int) else None for v in first.shape)

    def _open_openvino(self, path: Path, precision: str, threads: int | None) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        shape = model.input(0).get_partial_shape()
        self.input_shape = tuple(int(dim.get_length()) if dim.is_static else None for dim in shape)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        compiled = core.compile_model(model, "CPU", config)
        self._session = compiled
        self._request = compiled.create_infer_request()

    def run(self, images: np.ndarray) -> np.ndarray:
        """Patch vectors (B, P, D) float32 of normalised images (B, 3, S, S)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        expected = self.input_shape
        if images.ndim != len(expected) or any(
            want is not None and want != got for want, got in zip(expected, images.shape, strict=False)
        ):
            shown = ["B" if v is None else v for v in expected]
            raise ExportError(f"the graph takes input {shown}, got {list(images.shape)}")
        if self.backend == "onnxruntime":
            return np.asarray(self._session.run(None, {self._input_name: images})[0], dtype=np.float32)
        self._request.infer({0: images})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)
