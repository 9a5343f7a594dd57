"""The shared neighbour graph: exact, blocked, approximate, incremental."""

from __future__ import annotations

import pickle
import weakref

import numpy as np
import pytest
import torch

from core.analysis import approximate as approximate_module
from core.analysis import exact as exact_module
from core.analysis.neighbours import (
    EXACT_MAX_N,
    EXACT_MAX_N_BY_DEVICE,
    NeighbourGraph,
    approximate_graph,
    build_graph,
    exact_graph,
    graph_recall,
    neighbour_rows,
    update_graph,
)
from core.settings import SettingsError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device on this machine; the GPU graph is checked where one is")


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, seed: int = 0, clusters: int = 20, d: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    return unit(centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, d)))


def brute_force(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(s, idx, axis=1)


def test_exact_graph_matches_brute_force() -> None:
    x = clustered(300)
    graph = exact_graph(x, 10)
    idx, sim = brute_force(x, 10)
    assert np.array_equal(graph.indices, idx)
    assert np.allclose(graph.similarities, sim, atol=1e-5)
    assert graph.method == "exact" and graph.recall_at_10 == 1.0


def test_small_blocks_give_the_same_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered(700, seed=1)
    whole = exact_graph(x, 8)
    monkeypatch.setattr(exact_module, "BLOCK_ELEMENTS", 256 * 64)  # many row and column blocks
    blocked = exact_graph(x, 8)
    assert np.array_equal(whole.indices, blocked.indices)
    assert np.allclose(whole.similarities, blocked.similarities, atol=1e-6)


def test_float16_vectors_are_searched_in_small_converted_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Halves are converted a column block at a time, in smaller blocks than float32 is searched in
    (memory at a million images); many such blocks give the graph of their rounded values."""
    half = clustered(700, seed=1).astype(np.float16)
    rounded = exact_graph(half.astype(np.float32), 8)
    converted: list[int] = []
    real_float = torch.Tensor.float

    def counted(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dtype == torch.float16:
            converted.append(tensor.shape[0])
        return real_float(tensor)

    monkeypatch.setattr(torch.Tensor, "float", counted)
    monkeypatch.setattr(exact_module, "HALF_BLOCK_ELEMENTS", 256 * 64)
    blocked = exact_graph(half, 8)
    assert np.array_equal(rounded.indices, blocked.indices)
    assert np.allclose(rounded.similarities, blocked.similarities, atol=1e-6)
    assert max(converted) <= 256 * 64 // half.shape[1] and len(converted) > 20


def test_fewer_images_than_k_are_padded() -> None:
    graph = exact_graph(clustered(4), 10)
    assert (graph.indices[:, :3] >= 0).all() and (graph.indices[:, 3:] == -1).all()
    assert np.isneginf(graph.similarities[:, 3:]).all()


def test_identical_images_are_each_others_neighbour_not_their_own() -> None:
    x = clustered(50, seed=2)
    x[7] = x[3]
    graph = exact_graph(x, 5)
    assert graph.indices[3, 0] == 7 and graph.indices[7, 0] == 3
    assert (graph.indices != np.arange(50)[:, None]).all()


def test_approximate_graph_agrees_with_exact() -> None:
    x = clustered(6000, seed=3, clusters=60)
    graph = approximate_graph(x, 10, sample=300)
    assert graph.method.startswith("ivf")
    measured = graph_recall(graph, x, sample=500, seed=7)
    assert measured >= 0.95
    assert abs(graph.recall_at_10 - measured) < 0.05
    truth = exact_graph(x, 10)
    same = (graph.indices == truth.indices) & (truth.indices >= 0)
    assert np.allclose(graph.similarities[same], truth.similarities[same], atol=1e-5)  # rescored exactly


class _Tracked(np.ndarray):
    """An array a weak reference can follow (plain arrays take none)."""


def test_neighbour_rows_search_without_the_vectors_and_link_what_the_graph_links(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller that only proposes pairs gets the approximate graph's rows, unsorted, and the vectors
    are gone before the lists are probed (at a million sketches they were 0.36 GiB beside the codes)."""
    x = clustered(6000, seed=3, clusters=60)
    made: list[weakref.ref] = []

    def make() -> np.ndarray:
        vectors = x.copy().view(_Tracked)
        made.append(weakref.ref(vectors))
        return vectors

    held_while_probing: list[bool] = []
    probe = approximate_module._probe_kernel

    def watched(*args: object) -> None:
        held_while_probing.append(made[-1]() is not None)
        probe(*args)

    monkeypatch.setattr(approximate_module, "_probe_kernel", watched)
    rows = approximate_module.ivf_neighbour_rows(make, 10, target_recall=0.97, seed=0, sample=300)
    assert held_while_probing and not any(held_while_probing)
    graph = approximate_graph(x, 10, sample=300)
    shared = [len(set(a) & set(b)) for a, b in zip(rows.tolist(), graph.indices.tolist(), strict=True)]
    assert np.mean(shared) >= 9.9  # the same search: only the order (and the threads' ties) differ
    assert not (rows == np.arange(len(x))[:, None]).any()  # never a row itself


def test_neighbour_rows_are_the_exact_graphs_below_the_limit() -> None:
    x = clustered(3000, seed=5)
    assert np.array_equal(neighbour_rows(lambda: x, len(x), 7), exact_graph(x, 7).indices)


def test_half_precision_vectors_give_the_graph_of_their_values() -> None:
    """A large collection's snapshot holds float16: the approximate graph (its rescoring reads the
    halves through a table) and the exact one multiply them in float32, so both equal the float32
    graph of the same rounded values, and stay close to the unrounded graph."""
    x = clustered(6000, seed=3, clusters=60)
    half = x.astype(np.float16)
    rounded = half.astype(np.float32)
    truth = exact_graph(rounded, 10)
    assert np.array_equal(exact_graph(half, 10).indices, truth.indices)
    graph = approximate_graph(half, 10, sample=300)
    assert graph.method.startswith("ivf") and graph_recall(graph, rounded, sample=500, seed=7) >= 0.95
    same = (graph.indices == truth.indices) & (truth.indices >= 0)
    assert same.mean() > 0.9
    assert np.allclose(graph.similarities[same], truth.similarities[same], atol=1e-5)
    assert np.abs(truth.similarities - exact_graph(x, 10).similarities).max() < 1e-3


def test_auto_method_switches_to_approximate_above_the_limit() -> None:
    x = clustered(5000, seed=4)
    assert build_graph(x, 5, exact_max_n=10_000).method == "exact"
    assert build_graph(x, 5, exact_max_n=1000).method.startswith("ivf")


def test_incremental_update_equals_full_rebuild() -> None:
    x = clustered(500, seed=5)
    updated = update_graph(exact_graph(x[:470], 12), x)
    full = exact_graph(x, 12)
    assert np.array_equal(updated.indices, full.indices)
    assert np.allclose(updated.similarities, full.similarities, atol=1e-6)


def test_update_fills_a_graph_that_was_smaller_than_k() -> None:
    x = clustered(30, seed=6)
    assert np.array_equal(update_graph(exact_graph(x[:3], 10), x).indices, exact_graph(x, 10).indices)


def test_update_needs_the_original_rows_first() -> None:
    x = clustered(40)
    with pytest.raises(ValueError, match="Rebuild"):
        update_graph(exact_graph(x, 5), x[:30])


@pytest.mark.parametrize("bad", [np.ones((5, 8), dtype=np.float32), np.full((5, 8), np.nan, dtype=np.float32),
                                 np.ones(8, dtype=np.float32)])
def test_invalid_embeddings_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        exact_graph(bad, 3)


def test_graph_survives_pickling() -> None:
    graph = exact_graph(clustered(60), 5)
    again = pickle.loads(pickle.dumps(graph))
    assert isinstance(again, NeighbourGraph) and np.array_equal(again.indices, graph.indices)


GRAPH_CALLS = {
    "build_graph": lambda x, device: build_graph(x, 5, device=device),
    "exact_graph": lambda x, device: exact_graph(x, 5, device=device),
    "approximate_graph": lambda x, device: approximate_graph(x, 5, device=device),
    "update_graph": lambda x, device: update_graph(exact_graph(x[:20], 5), x, device=device),
    "graph_recall": lambda x, device: graph_recall(exact_graph(x, 5), x, device=device),
    "search": lambda x, device: exact_module.search(x, x, 5, device=device),
    "true_neighbours": lambda x, device: exact_module.true_neighbours(x, np.arange(3), 5, device=device),
}


@pytest.mark.parametrize("call", GRAPH_CALLS.values(), ids=GRAPH_CALLS.keys())
def test_unknown_device_is_refused(call) -> None:
    with pytest.raises(ValueError, match="unknown device 'tpu'; use 'cpu' or 'cuda'"):
        call(clustered(40), "tpu")


@pytest.mark.parametrize("call", GRAPH_CALLS.values(), ids=GRAPH_CALLS.keys())
def test_cuda_without_a_gpu_says_how_to_fix(call, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SettingsError, match="DEVICE=auto or DEVICE=cpu"):
        call(clustered(40), "cuda")


def test_explicit_cpu_device_gives_the_default_graph() -> None:
    x = clustered(400, seed=8)
    default, cpu = exact_graph(x, 10), build_graph(x, 10, device="cpu")
    assert np.array_equal(default.indices, cpu.indices)
    assert np.array_equal(default.similarities, cpu.similarities)


def test_default_switch_over_is_the_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(EXACT_MAX_N_BY_DEVICE, "cpu", 1000)
    assert build_graph(clustered(5000, seed=4), 5).method.startswith("ivf")


@needs_cuda
def test_cuda_keeps_collections_above_the_cpu_limit_exact() -> None:
    assert build_graph(clustered(EXACT_MAX_N + 1000, d=32), 5, device="cuda").method == "exact"


def assert_equally_exact(gpu: NeighbourGraph, cpu: NeighbourGraph, x: np.ndarray) -> None:
    """Same neighbours, except that rows may order near-ties (equal within fp32 rounding) differently."""
    assert gpu.indices.shape == cpu.indices.shape and gpu.method == cpu.method
    assert np.allclose(gpu.similarities, cpu.similarities, atol=1e-5)
    rows = np.arange(len(x))[:, None]
    true_cosines = np.einsum("ikd,ikd->ik", np.broadcast_to(x[:, None], (*gpu.indices.shape, x.shape[1])),
                             x[gpu.indices])
    assert np.allclose(true_cosines, gpu.similarities, atol=1e-5)
    assert (gpu.indices != rows).all()
    assert (gpu.indices == cpu.indices).mean() > 0.999


@needs_cuda
@pytest.mark.parametrize("small_blocks", [False, True], ids=["one block", "many blocks"])
def test_cuda_graph_equals_cpu_graph(small_blocks: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    x = unit(np.random.default_rng(9).standard_normal((3000, 128)))
    cpu = exact_graph(x, 20)
    if small_blocks:
        monkeypatch.setattr(exact_module, "BLOCK_ELEMENTS", 256 * 512)
        monkeypatch.setattr(exact_module, "CUDA_BLOCK_ELEMENTS", 256 * 512)
    assert_equally_exact(exact_graph(x, 20, device="cuda"), cpu, x)
    assert_equally_exact(update_graph(exact_graph(x[:2900], 20, device="cuda"), x, device="cuda"), cpu, x)


@needs_cuda
def test_cuda_approximate_graph_reaches_its_recall() -> None:
    x = clustered(6000, seed=3, clusters=60)
    graph = build_graph(x, 10, exact_max_n=1000, device="cuda")
    assert graph.method.startswith("ivf")
    assert graph_recall(graph, x, sample=500, seed=7, device="cuda") >= 0.95
