"""FLOPs of a ViT image tower, counted from its architecture: the numerator of the compute floor.

torch's ``FlopCounterMode`` is not used for the floor: in eval mode under no-grad, attention runs
through PyTorch's fused fast path (``_native_multi_head_attention``), which the counter does not
see, so it misses the QKV and output projections (5.89 instead of 8.82 GFLOP for ViT-B/32 at 224,
a floor 1.5x too high). With the fast path off it sees every linear layer but still not the two
attention matmuls (scaled dot-product attention), 0.09 GFLOP. ``tests/test_bench_floor.py`` checks
the count below against the counter, term by term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class TowerFlops:
    """Multiply-adds counted as 2 FLOPs, per image."""

    patch_embedding: int
    linear: int  # QKV, output projection and MLP of every block
    attention: int  # scores (Q K^T) and the weighted sum (A V) of every block
    projection: int  # the final projection into the embedding space

    @property
    def total(self) -> int:
        return self.patch_embedding + self.linear + self.attention + self.projection


def vit_tower_flops(model: torch.nn.Module) -> TowerFlops:
    """FLOPs per image of an OpenCLIP ``VisionTransformer`` (``model.visual``), from its shapes."""
    visual = model.visual
    patch = visual.conv1.kernel_size[0]
    size = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
    patches = (size // patch) ** 2
    tokens = patches + 1  # the class token
    width = visual.conv1.out_channels
    blocks = visual.transformer.resblocks
    hidden = blocks[0].mlp.c_fc.out_features
    per_block_linear = tokens * (3 * width * width + width * width + 2 * width * hidden)
    per_block_attention = 2 * tokens * tokens * width
    return TowerFlops(
        patch_embedding=2 * patches * (visual.conv1.in_channels * patch * patch) * width,
        linear=2 * len(blocks) * per_block_linear,
        attention=2 * len(blocks) * per_block_attention,
        projection=2 * width * int(visual.proj.shape[1]),
    )


def counted_flops(model: torch.nn.Module, image_size: int, *, fused_attention: bool) -> dict[str, int]:
    """What ``FlopCounterMode`` reports per aten op for one image, with the fused attention path on
    (eval mode, no grad: how inference runs) or off (train mode: the plain path). The model's mode
    is restored afterwards."""
    was_training = model.training
    model.train(not fused_attention)
    try:
        batch = torch.zeros(1, 3, image_size, image_size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.encode_image(batch)
    finally:
        model.train(was_training)
    return {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
