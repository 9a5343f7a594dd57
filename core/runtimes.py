"""The image tower on every runtime it can run on, behind one call, and the record of which one wins here.

torch is always installed; ONNX Runtime and OpenVINO come with the ``runtimes`` extra
(``pip install 'visual-anomaly[runtimes]'``). Each runs fp32 or int8 (dynamic quantisation: int8
weights, activations quantised per batch), and torch also bf16/fp16. Which is fastest depends on the
CPU (AMX, AVX-512 VNNI or only AVX2) and int8 may move embeddings enough to change what an analyst
sees, so no fixed choice is right everywhere and a cosine between embeddings is not enough to judge.

``RUNTIME=auto`` therefore follows a *decision* measured on this machine by ``benchmarks/ingest.py``
(``make bench``): every candidate's images/s side by side, and whether its embeddings give the same
duplicate pairs, the same top of the anomaly ranking and search top-10 overlap >= 0.95 against torch
fp32 on the analysis benchmark's labelled images (:mod:`core.runtime_agreement`). Until make bench
has run, the first start measures torch bf16 (fp16 on a GPU) against fp32 the same way on a small
probe set and records that (not where the CPU would emulate bf16: fp32 at once). Exported ONNX
models run on one single-threaded stream per core (`_in_streams`). The fastest candidate that changes nothing is
recorded in ``DATA_DIR/runtime/decision-<machine>.json``, the machine key being a digest of the CPU
model, its vector/matrix flags, the runtime versions and the model. Start-up only reads that file
(no measuring), so it stays cheap; a DATA_DIR shared by different machines holds one file per CPU.
Exported ONNX models are cached in the same folder.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

# preprocessed float32 batch (n, 3, size, size) on the model's device -> unnormalised features
ImageEncoder = Callable[[torch.Tensor], torch.Tensor]

LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}
OPTIONAL_RUNTIMES = ("onnxruntime", "openvino")
_VERSIONED = ("torch", "onnxruntime", "openvino")  # their kernels decide the speed
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
ONNX_OPSET = 17
SEARCH_OVERLAP_MIN = 0.95
SPEEDUP_MIN = 1.1  # below this, measurement noise could have picked it


class RuntimeUnavailable(RuntimeError):
    """A requested runtime cannot run here; the message says how to fix the configuration."""


@dataclass(frozen=True)
class Candidate:
    """One way to run the image tower: a runtime and a numeric precision."""

    runtime: str  # torch | onnxruntime | openvino
    precision: str  # fp32 | bf16 | fp16 | int8

    @property
    def name(self) -> str:
        return f"{self.runtime} {self.precision}"


TORCH_FP32 = Candidate("torch", "fp32")
CPU_CANDIDATES = (
    TORCH_FP32,
    Candidate("torch", "bf16"),
    Candidate("torch", "int8"),
    Candidate("onnxruntime", "fp32"),
    Candidate("onnxruntime", "int8"),
    Candidate("openvino", "fp32"),
    Candidate("openvino", "int8"),
)


@dataclass(frozen=True)
class Measurement:
    """One candidate as ``benchmarks/ingest.py`` measured it against torch fp32, in the same run."""

    candidate: Candidate
    images_per_s: float
    speedup: float  # over torch fp32 measured alongside
    search_overlap: float  # mean top-10 overlap with fp32's search results, every image a query
    same_duplicates: bool
    same_top_anomalies: bool
    min_cosine: float

    @property
    def unchanged(self) -> bool:
        """Whether an analyst would see the same results as with torch fp32."""
        return self.same_duplicates and self.same_top_anomalies and self.search_overlap >= SEARCH_OVERLAP_MIN

    def summary(self) -> str:
        """Speed and verdict in a few words, e.g. for a note on why a candidate was not chosen."""
        changed = [what for what, same in (("duplicate pairs", self.same_duplicates),
                                           ("top anomalies", self.same_top_anomalies),
                                           ("search results", self.search_overlap >= SEARCH_OVERLAP_MIN)) if not same]
        verdict = f"changes {', '.join(changed)}" if changed else "unchanged results"
        return f"{self.candidate.name} {self.speedup:.2f}x, {verdict} (search top-10 overlap {self.search_overlap:.3f})"


@dataclass(frozen=True)
class Decision:
    chosen: Candidate
    measured: tuple[Measurement, ...]

    @classmethod
    def from_measurements(cls, measured: tuple[Measurement, ...]) -> Decision:
        """The fastest candidate that changes nothing for an analyst and clearly beats torch fp32."""
        winners = [m for m in measured if m.unchanged and m.speedup >= SPEEDUP_MIN]
        chosen = max(winners, key=lambda m: m.images_per_s).candidate if winners else TORCH_FP32
        return cls(chosen, measured)

    def note(self) -> str:
        row = next((m for m in self.measured if m.candidate == self.chosen), None)
        if row is None or self.chosen == TORCH_FP32:
            others = "; ".join(m.summary() for m in self.measured if m.candidate != TORCH_FP32) or "none measured"
            return f"torch fp32: nothing measured here was faster with unchanged results ({others})"
        return (f"{self.chosen.name} chosen by the recorded measurement: {row.speedup:.2f}x torch fp32, "
                f"search top-10 overlap {row.search_overlap:.3f}, same duplicate pairs and top anomalies")


def available(runtime: str) -> bool:
    return importlib.util.find_spec(runtime) is not None


def require_available(runtime: str) -> None:
    if not available(runtime):
        raise RuntimeUnavailable(
            f"RUNTIME={runtime} is not installed; install it with: pip install 'visual-anomaly[runtimes]' "
            "(or set RUNTIME=torch)."
        )


def cpu_description() -> tuple[str, tuple[str, ...]]:
    """The CPU model and which of the flags that decide kernel speed it has."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return model, tuple(f for f in _CPU_FLAGS if f in flags)


def bf16_emulated() -> bool:
    """Whether torch would run bf16 in software here: an x86 CPU without AVX-512 BF16 or AMX. There
    bf16 measured 0.13x fp32 (an AVX2 EPYC), so measuring it at all only costs time: the start-up
    check took about 100 s for its 128 probe images. Other architectures are measured."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    _, flags = cpu_description()
    return not {"avx512_bf16", "amx_bf16"} & set(flags)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine_key(model_tag: str) -> str:
    """A digest of what makes a measured decision valid: CPU, flags, runtime versions, the model."""
    model, flags = cpu_description()
    versions = [_version(p) for p in _VERSIONED]
    return hashlib.sha256(json.dumps([model, flags, versions, model_tag]).encode()).hexdigest()[:16]


def decision_path(folder: Path, key: str) -> Path:
    return folder / f"decision-{key}.json"


def read_decision(folder: Path, key: str) -> Decision | None:
    path = decision_path(folder, key)
    try:
        raw = json.loads(path.read_text())
        measured = tuple(Measurement(**(m | {"candidate": Candidate(**m["candidate"])})) for m in raw["measured"])
        return Decision(Candidate(**raw["chosen"]), measured)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none recorded (or from an older layout): measure again with make bench


def can_record(folder: Path) -> bool:
    """Whether this process could write a decision under ``folder``: the nearest existing path at
    or above it is a folder it may write to (a read-only collection's is not)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing is not None and existing.is_dir() and os.access(existing, os.W_OK)


def write_decision(folder: Path, key: str, decision: Decision) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = decision_path(folder, key)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # processes starting together each write whole
    partial.write_text(json.dumps(asdict(decision), indent=1))
    partial.replace(path)
    return path


# encoders ---------------------------------------------------------------------------------------
def build_encoder(candidate: Candidate, model: torch.nn.Module, image_size: int, folder: Path,
                  model_tag: str) -> ImageEncoder:
    """An encoder for ``candidate`` from the fp32 OpenCLIP ``model`` (which is never modified).
    ONNX exports are written once to ``folder``, keyed by ``model_tag``."""
    if candidate.runtime == "torch":
        return _torch_encoder(candidate.precision, model)
    require_available(candidate.runtime)
    onnx_path = _onnx_model(model, image_size, folder, model_tag, candidate.precision)
    threads = torch.get_num_threads()  # the same cores torch would use, so the pipeline sizes stay valid
    if candidate.runtime == "onnxruntime":
        return _onnxruntime_encoder(onnx_path, threads)
    return _openvino_encoder(onnx_path, threads)


def _torch_encoder(precision: str, model: torch.nn.Module) -> ImageEncoder:
    if precision == "fp32":
        return model.encode_image
    if precision == "int8":
        with warnings.catch_warnings():  # torch.ao's notice that quantisation moves to torchao
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
        return quantized.encode_image
    dtype = LOW_PRECISION[precision]
    low = copy.deepcopy(model).to(dtype)
    return lambda batch: low.encode_image(batch.to(dtype))


class _ImageTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


def _onnx_model(model: torch.nn.Module, image_size: int, folder: Path, model_tag: str, precision: str) -> Path:
    if precision not in ("fp32", "int8"):
        raise RuntimeUnavailable(f"PRECISION={precision} runs on RUNTIME=torch only; use fp32 or int8 here.")
    folder.mkdir(parents=True, exist_ok=True)
    stem = hashlib.sha256(f"{model_tag} torch {torch.__version__} opset {ONNX_OPSET}".encode()).hexdigest()[:16]
    fp32 = folder / f"image-tower-{stem}.onnx"
    if not fp32.exists():
        partial = fp32.with_suffix(".partial")
        example = torch.zeros(1, 3, image_size, image_size)
        # with gradients on, attention takes the plain path (the fused one has no ONNX form); the
        # tracer's warnings are about shape checks inside attention, constant for this model
        with torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(_ImageTower(model), (example,), str(partial), input_names=["pixels"],
                              output_names=["features"], opset_version=ONNX_OPSET, dynamo=False,
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}})
        partial.replace(fp32)  # a crash mid-export leaves no half file that a later start would trust
    if precision == "fp32":
        return fp32
    int8 = folder / f"image-tower-{stem}-int8.onnx"
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        partial = int8.with_suffix(".partial")
        quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8)
        partial.replace(int8)
    return int8


STREAM_PART = 4  # images per part: as fast per image as 16 on a stream, and a straggler holds few


def _in_streams(run_parts: Callable[[Sequence[np.ndarray]], list[np.ndarray]]) -> ImageEncoder:
    """An encoder that cuts each batch into parts of ``STREAM_PART`` images for ``run_parts`` to run
    on single-threaded streams, one per core, each stream taking the next part when it is done.
    On 2 cores of an AVX2 EPYC this embeds 13.5 images/s with ONNX Runtime against 11.9 for one
    stream on both cores: no stream waits for the other core at each layer's barrier, so a decode
    or store thread that takes a core for a moment slows one stream instead of stalling both."""

    def encode(batch: torch.Tensor) -> torch.Tensor:
        pixels = batch.cpu().numpy()
        parts = [pixels[i:i + STREAM_PART] for i in range(0, len(pixels), STREAM_PART)] or [pixels]
        return torch.from_numpy(np.concatenate(run_parts(parts)))

    return encode


def _onnxruntime_encoder(path: Path, threads: int) -> ImageEncoder:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # one session, run from one thread per stream (Run is thread-safe)
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    pool = ThreadPoolExecutor(threads, thread_name_prefix="encoder-stream")

    def run_parts(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(pool.map(lambda part: session.run(None, {"pixels": part})[0], parts))

    return _in_streams(run_parts)


def _openvino_encoder(path: Path, threads: int) -> ImageEncoder:
    import openvino

    # OpenVINO would silently run bf16 on CPUs with AMX: fp32 means fp32 here (int8 weights stay int8).
    # Streams are not pinned to cores: a pinned one waits while the ingest's decode thread holds its
    # core (end-to-end JPEG ingest on 2 AVX2 cores 8.8 pinned, 9.7 not)
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": threads,
              "PERFORMANCE_HINT": "THROUGHPUT", "ENABLE_CPU_PINNING": False}
    compiled = openvino.Core().compile_model(str(path), "CPU", config)
    streams = openvino.AsyncInferQueue(compiled, threads)

    def run_parts(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        outputs: list[np.ndarray] = [np.empty(0)] * len(parts)

        def done(request: openvino.InferRequest, index: int) -> None:
            outputs[index] = request.get_output_tensor(0).data.copy()

        streams.set_callback(done)
        for index, part in enumerate(parts):
            streams.start_async({0: part}, index)  # waits for a free stream
        streams.wait_all()
        return outputs

    return _in_streams(run_parts)
