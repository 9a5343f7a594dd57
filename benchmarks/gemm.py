"""fp32 matrix-multiply peaks of every library installed here: the denominators of the compute floor.

The floor has always been the model's FLOPs over torch's matmul peak, the rate the default runtime's
BLAS reaches. That BLAS is not the fastest everywhere: on an AVX2 EPYC torch's MKL reached 91-98
GFLOP/s where OpenBLAS (numpy's) reached 136-142, so the torch floor understates what the cores can
do there. ``benchmarks/ingest.py`` prints both floors, so no figure hides that.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from core.runtimes import available

# square, and the encoder's MLP product at batch 32 (50 tokens x 768 -> 3072): libraries tune
# for different shapes, and either may be a library's best
SHAPES = ((2048, 2048, 2048), (1600, 768, 3072))


def best_rate(run: Callable[[], object], flops: float, repeats: int = 5) -> float:
    """Best GFLOP/s of ``repeats`` timed calls of ``run`` (which does ``flops``) after one warm-up call."""
    run()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


def _torch(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], np.ndarray]:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return lambda: (ta @ tb).numpy()


def _numpy(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], np.ndarray]:
    return lambda: a @ b


def _onnxruntime(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], np.ndarray]:
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    (m, k), n = a.shape, b.shape[1]
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "gemm",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
                              [numpy_helper.from_array(b, "W")])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"X": a})[0]


def _openvino(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], np.ndarray]:
    import openvino
    from openvino import opset13

    x = opset13.parameter(list(a.shape), np.float32)
    product = opset13.matmul(x, opset13.constant(b), False, False)
    compiled = openvino.Core().compile_model(openvino.Model([product], [x]), "CPU",
                                             {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return lambda: request.infer({0: a})[0]


# each builds, from operands a (m, k) and b (k, n), a call that returns a @ b computed by that library
LIBRARIES: dict[str, Callable[[np.ndarray, np.ndarray, int], Callable[[], np.ndarray]]] = {
    "torch": _torch, "numpy": _numpy, "onnxruntime": _onnxruntime, "openvino": _openvino,
}


def cpu_gemm_peaks(threads: int) -> dict[str, float]:
    """Each installed library's best fp32 GFLOP/s over ``SHAPES`` on ``threads`` threads (numpy's
    BLAS uses its own count: all cores)."""
    rng = np.random.default_rng(0)
    operands = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))
                for m, k, n in SHAPES]
    return {name: max(best_rate(build(a, b, threads), 2.0 * a.shape[0] * a.shape[1] * b.shape[1]) for a, b in operands)
            for name, build in LIBRARIES.items() if available(name)}
