"""Image-encoder runtimes: what RUNTIME=auto picks from a recorded measurement, and forced runtimes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import core.embedding as embedding
import core.runtimes as runtimes
from core.embedding import Embedder, ModelUnavailable
from core.runtimes import (
    SPEEDUP_MIN,
    TORCH_FP32,
    Candidate,
    Decision,
    ImageEncoder,
    Measurement,
    machine_key,
    read_decision,
    write_decision,
)
from core.settings import Settings


def measured(candidate: Candidate, speedup: float, *, overlap: float = 1.0, same: bool = True) -> Measurement:
    return Measurement(candidate, 10.0 * speedup, speedup, overlap, same, same, 0.999)


def test_the_fastest_candidate_that_changes_nothing_for_an_analyst_wins() -> None:
    ort_int8, ov_fp32, torch_int8 = Candidate("onnxruntime", "int8"), Candidate("openvino", "fp32"), Candidate("torch", "int8")
    decision = Decision.from_measurements((
        measured(TORCH_FP32, 1.0),
        measured(ort_int8, 4.0, same=False),  # fastest, but moves a duplicate pair
        measured(torch_int8, 3.0, overlap=0.94),  # search results move
        measured(ov_fp32, 2.0),
    ))
    assert decision.chosen == ov_fp32
    assert "openvino fp32" in decision.note()


def test_a_candidate_within_noise_of_torch_fp32_is_not_chosen() -> None:
    decision = Decision.from_measurements((measured(TORCH_FP32, 1.0), measured(Candidate("openvino", "fp32"), 1.05)))
    assert decision.chosen == TORCH_FP32


def test_a_recorded_decision_is_read_back_only_for_the_same_machine_and_model(tmp_path: Path) -> None:
    decision = Decision.from_measurements((measured(TORCH_FP32, 1.0), measured(Candidate("torch", "int8"), 2.0)))
    key = machine_key("ViT-B-32 random seed 0")
    write_decision(tmp_path, key, decision)
    assert read_decision(tmp_path, key) == decision
    assert read_decision(tmp_path, machine_key("ViT-B-32 other weights")) is None
    (tmp_path / f"decision-{key}.json").write_text("{not json")
    assert read_decision(tmp_path, key) is None  # a damaged record means: measure again


def test_runtime_auto_follows_the_recorded_decision(tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(data_dir=tmp_path, model_pretrained="none", runtime="auto")
    decision = Decision.from_measurements((measured(TORCH_FP32, 1.0), measured(Candidate("torch", "int8"), 2.0)))
    write_decision(tmp_path / "runtime", machine_key(embedder.model_tag), decision)
    chosen = Embedder(settings)
    assert (chosen.runtime, chosen.precision) == ("torch", "int8")
    assert "recorded measurement" in chosen.info.precision_note
    batch = torch.randn(2, 3, chosen.image_size, chosen.image_size)
    reference = embedder.encode_with(embedder.encoder_for(TORCH_FP32), batch).numpy()
    assert float((chosen.embed_tensors(batch) * reference).sum(axis=1).min()) > 0.99


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_runtime_on_parallel_streams_gives_the_embeddings_torch_gives(
    tmp_path: Path, embedder: Embedder, runtime: str
) -> None:
    """The batch is cut into parts that streams take as they come free: more parts than streams,
    the last one short, each image's embedding back in its own row."""
    forced = Embedder(Settings(data_dir=tmp_path, model_pretrained="none", runtime=runtime, precision="fp32"))
    assert (forced.info.runtime, forced.info.precision) == (runtime, "fp32")
    batch = torch.randn(2 * runtimes.STREAM_PART + 1, 3, forced.image_size, forced.image_size)
    reference = embedder.encode_with(embedder.encoder_for(TORCH_FP32), batch).numpy()  # the session's may be bf16
    np.testing.assert_allclose(forced.embed_tensors(batch), reference, atol=1e-4)
    assert list((tmp_path / "runtime").glob("image-tower-*.onnx"))  # exported once, reused next start


def test_a_forced_runtime_that_is_not_installed_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtimes, "available", lambda runtime: runtime == "torch")
    with pytest.raises(ModelUnavailable, match=r"visual-anomaly\[runtimes\]"):
        Embedder(Settings(data_dir=tmp_path, model_pretrained="none", runtime="openvino", precision="fp32"))


def test_bf16_is_refused_on_a_runtime_that_does_not_run_it(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="PRECISION=bf16"):
        Embedder(Settings(data_dir=tmp_path, model_pretrained="none", runtime="onnxruntime", precision="bf16"))


def _inject_lower_precision(monkeypatch: pytest.MonkeyPatch, low: Callable[[ImageEncoder], ImageEncoder]) -> None:
    """torch fp32 taking twice its time (it waits as long again as it worked, so a busy machine
    keeps the ratio), and the lower precision made by ``low`` from fp32: the lower one is always
    the faster, so only its agreement can decide. A smaller probe set keeps the test quick."""
    real = embedding.build_encoder

    def build(candidate: Candidate, model: torch.nn.Module, *args: object) -> ImageEncoder:
        fp32 = real(TORCH_FP32, model, *args)
        if candidate != TORCH_FP32:
            return low(fp32)

        def slow(batch: torch.Tensor) -> torch.Tensor:
            began = time.perf_counter()
            features = fp32(batch)
            time.sleep(time.perf_counter() - began)
            return features

        return slow

    monkeypatch.setattr(embedding, "build_encoder", build)
    monkeypatch.setattr(embedding, "PROBE_ORIGINALS", 12)
    monkeypatch.setattr(embedding, "bf16_emulated", lambda: False)  # as on a CPU with AMX or AVX-512 BF16


def test_auto_precision_refuses_a_faster_precision_that_changes_what_an_analyst_sees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nudged(fp32: ImageEncoder) -> ImageEncoder:
        # small errors everywhere, like a lower precision's: every cosine to fp32 stays above 0.999,
        # which a cosine tolerance would accept, but neighbours near each other swap places
        generator = torch.Generator().manual_seed(1)

        def encode(batch: torch.Tensor) -> torch.Tensor:
            features = fp32(batch)
            noise = torch.randn(features.shape, generator=generator)
            return features + 0.02 * features.norm(dim=-1, keepdim=True) * noise / noise.norm(dim=-1, keepdim=True)

        return encode

    _inject_lower_precision(monkeypatch, nudged)
    chosen = Embedder(Settings(data_dir=tmp_path, model_pretrained="none"))
    assert (chosen.runtime, chosen.precision) == ("torch", "fp32")
    recorded = read_decision(tmp_path / "runtime", machine_key(chosen.model_tag))
    assert recorded is not None and recorded.chosen == TORCH_FP32
    low = next(m for m in recorded.measured if m.candidate != TORCH_FP32)
    assert low.speedup > SPEEDUP_MIN and low.min_cosine > 0.999 and not low.unchanged
    assert "changes" in chosen.info.precision_note and low.candidate.name in chosen.info.precision_note


def test_auto_precision_takes_a_faster_precision_that_agrees_and_records_it_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inject_lower_precision(monkeypatch, lambda fp32: fp32)
    settings = Settings(data_dir=tmp_path, model_pretrained="none")
    chosen = Embedder(settings)
    assert chosen.runtime == "torch" and chosen.precision != "fp32"
    assert "probe images" in chosen.info.precision_note

    monkeypatch.setattr(embedding, "compare_in_turn", lambda *args: pytest.fail("measured again"))
    again = Embedder(settings)
    assert (again.runtime, again.precision) == (chosen.runtime, chosen.precision)
    assert "recorded measurement" in again.info.precision_note


def test_auto_precision_does_not_measure_bf16_where_the_cpu_would_emulate_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedding, "bf16_emulated", lambda: True)
    monkeypatch.setattr(embedding, "compare_in_turn", lambda *args: pytest.fail("bf16 measured on an emulating CPU"))
    chosen = Embedder(Settings(data_dir=tmp_path, model_pretrained="none"))
    assert (chosen.runtime, chosen.precision) == ("torch", "fp32")
    assert "no native bf16" in chosen.info.precision_note


def test_auto_precision_on_a_collection_that_cannot_record_it_takes_fp32_without_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedding, "bf16_emulated", lambda: False)  # a CPU where bf16 would be measured
    monkeypatch.setattr(embedding, "compare_in_turn", lambda *args: pytest.fail("measured where nothing can keep it"))
    (tmp_path / "runtime").write_text("")  # no folder can be made there, whoever runs this (root included)
    chosen = Embedder(Settings(data_dir=tmp_path, model_pretrained="none"))
    assert (chosen.runtime, chosen.precision) == ("torch", "fp32")
    assert "read-only" in chosen.info.precision_note
    assert runtimes.can_record(tmp_path / "elsewhere" / "runtime") and not runtimes.can_record(tmp_path / "runtime")


@pytest.mark.parametrize(("machine", "flags", "emulated"), [
    ("x86_64", "fpu avx2 fma", True),
    ("x86_64", "fpu avx2 avx512f avx512_bf16", False),
    ("x86_64", "fpu avx2 avx512f amx_bf16 amx_tile", False),
    ("aarch64", "", False),  # other architectures are measured
])
def test_bf16_counts_as_emulated_on_x86_without_its_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine: str, flags: str, emulated: bool
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"model name\t: Some CPU\nflags\t\t: {flags}\n")
    real_path = runtimes.Path
    monkeypatch.setattr(runtimes, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    monkeypatch.setattr(runtimes.platform, "machine", lambda: machine)
    assert runtimes.bf16_emulated() is emulated
