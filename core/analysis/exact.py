"""Exact top-k cosine search in bounded blocks, and recall against it.

Products and top-k selection run in torch (already loaded for embedding), on the CPU or a CUDA GPU:
torch's CPU matmul and top-k are several times faster than numpy's, and a GPU is faster again by
two orders of magnitude. Products stay in exact float32 on both (torch leaves TF32 off unless a
caller turns it on): neighbour order decides duplicates, and fp32 is what the CPU graph uses.
At most `block_elements(device)` similarities exist at once, so memory stays flat however many
rows are searched.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from core.devices import check_device

BLOCK_ELEMENTS = 1 << 25  # CPU: 32M float32 = 128 MiB of similarities at once
# float16 vectors on the CPU (a large collection's snapshot): a quarter of that, and no more converted
# columns than similarities. The vectors' float32 copies were the larger part: a block of 131,072
# 512-d columns is 256 MB, beside the 1 GB of halves kept small to save memory in the first place
HALF_BLOCK_ELEMENTS = 1 << 23
CUDA_BLOCK_ELEMENTS = 1 << 28  # GPU: 1 GiB of similarities, when a sixteenth of free memory allows
CUDA_BYTES_PER_ELEMENT = 16  # a similarity plus top-k's working space for it


def check_vectors(vectors: np.ndarray) -> np.ndarray:
    """The vectors as a C-contiguous (n, d) array, or ValueError saying what is wrong: float16 as
    given (a collection's snapshot keeps a million vectors in 1 GB instead of 2; every product
    takes its block in float32, `as_float32`), anything else as float32."""
    arr = np.asarray(vectors)
    arr = np.ascontiguousarray(arr, dtype=np.float16 if arr.dtype == np.float16 else np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected an (n, d) array of embeddings, got shape {arr.shape}")
    probe = arr[:: max(1, len(arr) // 1000)].astype(np.float32)
    if len(probe) and not np.isfinite(probe).all():
        raise ValueError("embeddings contain NaN or infinite values; re-embed the affected images")
    if len(probe) and np.abs(np.linalg.norm(probe, axis=1) - 1).max() > 1e-3:
        raise ValueError("embeddings must be L2-normalised (cosine similarity is their dot product)")
    return arr


def as_float32(rows: np.ndarray) -> np.ndarray:
    """Gathered rows of checked vectors in float32 (no copy when they already are)."""
    return rows.astype(np.float32, copy=False)


def device_vectors(vectors: np.ndarray, device: str) -> torch.Tensor:
    """Checked vectors as a tensor on `device` ("cpu": sharing the array's memory, no copy)."""
    return torch.from_numpy(check_vectors(vectors)).to(check_device(device))


def block_elements(device: torch.device) -> int:
    """How many similarities one block may hold on `device`."""
    if device.type != "cuda":
        return BLOCK_ELEMENTS
    free, _ = torch.cuda.mem_get_info(device)
    return max(BLOCK_ELEMENTS, min(CUDA_BLOCK_ELEMENTS, free // CUDA_BYTES_PER_ELEMENT))


def search(queries: np.ndarray, vectors: np.ndarray, k: int, self_offset: int | None = None, *,
           device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows of `vectors` for each query: (indices int32, cosines float32), best first.

    With `self_offset`, query i is row `self_offset + i` of `vectors` and is left out of its own
    result. Missing neighbours (k above the number of candidates) are -1 / -inf. `device` ("cpu"
    or "cuda") is where the products run; the vectors move there once.
    """
    x = device_vectors(vectors, device)
    q = x if queries is vectors else device_vectors(queries, device)
    return search_tensors(q, x, k, self_offset)


def search_tensors(queries: torch.Tensor, vectors: torch.Tensor, k: int,
                   self_offset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`search` over checked tensors already on the device that computes (see `device_vectors`);
    float16 ones are multiplied a block at a time in float32."""
    q, x = queries, vectors
    n_q, n = len(q), len(x)
    out_idx = np.full((n_q, k), -1, dtype=np.int32)
    out_sim = np.full((n_q, k), -np.inf, dtype=np.float32)
    if n_q == 0 or n == 0:
        return out_idx, out_sim
    budget = block_elements(x.device)
    cols = min(n, budget // 256)
    if x.dtype == torch.float16 and x.device.type == "cpu":
        budget = HALF_BLOCK_ELEMENTS
        cols = min(n, budget // 256, budget // x.shape[1])
    rows = max(1, min(n_q, budget // cols))
    with torch.inference_mode():
        for r0 in range(0, n_q, rows):
            r1 = min(n_q, r0 + rows)
            best_sim = torch.full((r1 - r0, k), -math.inf, device=x.device)
            best_idx = torch.full((r1 - r0, k), -1, dtype=torch.int64, device=x.device)
            block = q[r0:r1].float()
            for c0 in range(0, n, cols):
                c1 = min(n, c0 + cols)
                sims = block @ x[c0:c1].float().T
                if self_offset is not None:
                    _mask_self(sims, self_offset + r0, c0)
                top_sim, top_idx = torch.topk(sims, min(k, c1 - c0), dim=1)
                best_sim, best_idx = merge_top_k(best_sim, best_idx, top_sim, top_idx + c0, k)
            out_sim[r0:r1] = best_sim.cpu().numpy()
            out_idx[r0:r1] = best_idx.cpu().numpy()
    out_idx[~np.isfinite(out_sim)] = -1
    return out_idx, out_sim


def merge_top_k(sim_a: torch.Tensor, idx_a: torch.Tensor, sim_b: torch.Tensor, idx_b: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise best k of two (similarity, index) candidate sets."""
    sims = torch.cat([sim_a, sim_b], dim=1)
    idx = torch.cat([idx_a, idx_b], dim=1)
    top_sim, pos = torch.topk(sims, min(k, sims.shape[1]), dim=1)
    return top_sim, torch.gather(idx, 1, pos)


def _mask_self(sims: torch.Tensor, first_query_row: int, first_col: int) -> None:
    """Set similarity(query, itself) to -inf where a query's own row lies in this column block."""
    rows = torch.arange(sims.shape[0], device=sims.device)
    cols = rows + (first_query_row - first_col)
    inside = (cols >= 0) & (cols < sims.shape[1])
    sims[rows[inside], cols[inside]] = -math.inf


def true_neighbours(vectors: np.ndarray, rows: np.ndarray, at: int, *, device: str = "cpu") -> np.ndarray:
    """Exact `at` nearest other rows for each of `rows` (-1 padded)."""
    found, _ = search(vectors[rows], vectors, at + 1, device=device)
    out = np.full((len(rows), at), -1, dtype=np.int32)
    for i, (row, r) in enumerate(zip(found, rows, strict=True)):
        others = row[(row != r) & (row >= 0)][:at]
        out[i, : len(others)] = others
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true neighbours (-1 ignored) present in the same row of `found`."""
    width = truth.shape[1]
    hits = [len(np.intersect1d(f[:width], t[t >= 0])) / max(1, int((t >= 0).sum()))
            for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 1.0
