"""The compute floor's FLOP count matches the architecture, and the eval-mode counter would not; every
library whose GEMM peak the floor may use multiplies what it is given."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.flops import counted_flops, vit_tower_flops
from benchmarks.gemm import LIBRARIES
from core.embedding import Embedder
from core.runtimes import available


def test_vit_b32_flops_match_the_architecture(embedder: Embedder) -> None:
    flops = vit_tower_flops(embedder._fp32)
    # ViT-B/32 at 224: 49 patches + 1 class token, width 768, MLP 3072, 12 blocks, 512-d output
    tokens, width, hidden, blocks = 50, 768, 3072, 12
    assert flops.patch_embedding == 2 * 49 * (3 * 32 * 32) * width
    assert flops.linear == 2 * blocks * tokens * (4 * width * width + 2 * width * hidden)
    assert flops.attention == 2 * blocks * 2 * tokens * tokens * width
    assert flops.projection == 2 * width * 512
    assert 8.81e9 < flops.total < 8.83e9


def test_counter_sees_every_linear_layer_only_with_the_fused_path_off(embedder: Embedder) -> None:
    flops = vit_tower_flops(embedder._fp32)
    plain = counted_flops(embedder._fp32, embedder.image_size, fused_attention=False)
    fused = counted_flops(embedder._fp32, embedder.image_size, fused_attention=True)
    assert not embedder._fp32.training  # the shared model is back in eval mode
    # plain path: convolution, every linear layer and the projection, term for term (the attention
    # matmuls inside scaled dot-product attention are the only part it misses)
    assert plain["aten.convolution"] == flops.patch_embedding
    assert plain["aten.addmm"] == flops.linear
    assert plain["aten.mm"] == flops.projection
    assert sum(plain.values()) == flops.total - flops.attention
    # fused path (how inference runs): QKV and output projections vanish, a third of the work
    assert sum(fused.values()) < 0.7 * flops.total


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_each_gemm_peak_is_timed_on_the_product_it_claims(library: str) -> None:
    """A rectangular product, so swapped or transposed operands cannot pass."""
    if not available(library):
        pytest.fail(f"{library} is part of make test's environment (the runtimes extra)")
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((48, 80), dtype=np.float32), rng.standard_normal((80, 24), dtype=np.float32)
    product = LIBRARIES[library](a, b, 2)()
    np.testing.assert_allclose(np.asarray(product), a @ b, rtol=1e-4, atol=1e-4)
