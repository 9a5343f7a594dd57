"""OpenCLIP image and text embeddings, built once per process.

Weights come from a local checkpoint (``MODEL_CHECKPOINT``), a pretrained tag (``MODEL_PRETRAINED``,
fetched once into the Hugging Face cache), or are random (``MODEL_PRETRAINED=none``: the real
architecture with deterministic random weights, for tests and offline trials). When a pretrained
tag is neither cached nor reachable we fail within seconds with the fix, instead of letting the hub
client retry for a minute.

Lower precision is used only where it is measured on this machine to be faster than fp32 *and* to
leave what an analyst sees unchanged (the same duplicate pairs, top anomalies and search results;
see :mod:`core.runtime_agreement`): bf16 wins by several times on CPUs with AMX and loses on
AVX2-only ones, and can reorder neighbours at a cosine above 0.9999, so neither a fixed choice nor a
cosine tolerance is right. Other runtimes (ONNX Runtime, OpenVINO) and int8 are chosen with
``RUNTIME``; ``auto`` follows the decision recorded for this CPU: ``make bench``'s over every
runtime, else the start-up measurement of fp32 against bf16, recorded so it runs once per machine
(see :mod:`core.runtimes`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.devices import resolve_device
from core.observability import log_event
from core.runtime_agreement import PROBE_ORIGINALS, compare_in_turn, decision_from, probe_images, signals_of
from core.runtimes import (
    TORCH_FP32,
    Candidate,
    Decision,
    ImageEncoder,
    RuntimeUnavailable,
    bf16_emulated,
    build_encoder,
    can_record,
    machine_key,
    read_decision,
    write_decision,
)
from core.settings import Settings

RANDOM_SEED = 0
CPU_PROBE_BATCH = 16  # enough to time a CPU, which is compute-bound from the first image


class ModelUnavailable(RuntimeError):
    """The configured weights cannot be loaded; the message says how to fix the configuration."""


@dataclass(frozen=True)
class ModelInfo:
    """What the app shows on screen about the model in use."""

    name: str
    weights: str  # "random (MODEL_PRETRAINED=none)", a pretrained tag, or a checkpoint path
    random_weights: bool
    device: str
    precision: str
    dim: int
    precision_note: str  # the measurement that chose the precision
    runtime: str = "torch"


def _reachable(host: str, port: int = 443, timeout_s: float = 3.0) -> bool:
    """Whether ``host`` accepts a TCP connection within ``timeout_s`` (DNS included, which can hang)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return bool(result and result[0])


def _cached_pretrained_file(cfg: dict) -> str | None:
    """The local file for a pretrained config if an earlier run downloaded it, else ``None``."""
    from huggingface_hub import try_to_load_from_cache

    hub = cfg.get("hf_hub", "")
    if hub:
        model_id, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        stem = filename.rsplit(".", 1)[0]
        for candidate in (f"{stem}.safetensors", "open_clip_model.safetensors", filename):
            found = try_to_load_from_cache(model_id, candidate)
            if isinstance(found, str):
                return found
    url = cfg.get("url", "")
    if url:
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return str(local)
    return None


def resolve_weights(settings: Settings) -> tuple[str | None, str]:
    """``(path or None for random, description)``, downloading a pretrained tag only when reachable."""
    import open_clip

    if settings.model_checkpoint is not None:
        return str(settings.model_checkpoint), f"checkpoint {settings.model_checkpoint}"
    tag = settings.model_pretrained
    if tag.lower() == "none":
        return None, "random (MODEL_PRETRAINED=none)"
    cfg = open_clip.get_pretrained_cfg(settings.model_name, tag)
    if not cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(settings.model_name)) or "none"
        raise ModelUnavailable(
            f"MODEL_PRETRAINED={tag!r} is not a pretrained tag for MODEL_NAME={settings.model_name!r}. "
            f"Known tags: {known}."
        )
    cached = _cached_pretrained_file(cfg)
    if cached:
        return cached, f"pretrained {tag}"
    host = "huggingface.co" if cfg.get("hf_hub") else cfg["url"].split("/")[2]
    if not _reachable(host):
        raise ModelUnavailable(
            f"The pretrained weights {settings.model_name}/{tag} are not in the local cache and {host} "
            "cannot be reached. Set MODEL_CHECKPOINT to a local weights file, or MODEL_PRETRAINED=none "
            "to try the product with random weights (search and analysis quality will be poor)."
        )
    try:
        return open_clip.download_pretrained(cfg), f"pretrained {tag}"
    except Exception as exc:  # the hub client raises many types; all mean the same to the user
        raise ModelUnavailable(f"Downloading {settings.model_name}/{tag} failed: {exc}") from exc


def resolve_embedding_dim(model_name: str) -> int:
    """The embedding size of an architecture, read from its config without building the model.

    A process that only analyses (the CLI's `duplicates`, a page before its first search) never
    imports OpenCLIP for it: the import alone holds ~0.2 GB (timm, torchvision). The bundled
    config file is read as OpenCLIP would; other names (a hub model) go through OpenCLIP.
    """
    config = _bundled_config(model_name)
    if config is None:
        import open_clip

        config = open_clip.get_model_config(model_name)
    if config is None:
        raise ModelUnavailable(f"MODEL_NAME={model_name!r} is not an OpenCLIP architecture.")
    return int(config["embed_dim"])


def _bundled_config(model_name: str) -> dict | None:
    """OpenCLIP's own config file for ``model_name``, found without importing OpenCLIP."""
    if "/" in model_name or "\\" in model_name:  # a hub name or a path, never a bundled file
        return None
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "model_configs" / f"{model_name}.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _model_tag(model_name: str, weights: str | None) -> str:
    """Names these exact weights (a file by its path, size and time), for caches of derived models."""
    if weights is None:
        return f"{model_name} random seed {RANDOM_SEED}"
    stat = os.stat(weights)
    return f"{model_name} {weights} {stat.st_size} {stat.st_mtime_ns}"


class Embedder:
    """The OpenCLIP model, its preprocessing and tokenizer. Thread-safe for inference calls."""

    def __init__(self, settings: Settings) -> None:
        import open_clip

        weights, description = resolve_weights(settings)
        self.device = resolve_device(settings.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)  # random weights must be the same in every process
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    settings.model_name, pretrained=weights, device=self.device
                )
            except RuntimeError as exc:
                raise ModelUnavailable(
                    f"Loading {settings.model_name} with {description} failed: {exc}. Check that "
                    "MODEL_CHECKPOINT matches MODEL_NAME."
                ) from exc
        model.eval()
        self._fp32 = model
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(settings.model_name)
        self.image_size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size)
        self.dim = int(model.text_projection.shape[1] if model.text_projection is not None else 512)
        self._mutex = threading.Lock()
        self._probe_batch_size = settings.embed_batch_size if self.device == "cuda" else CPU_PROBE_BATCH
        self.model_tag = _model_tag(settings.model_name, weights)
        self.runtime_folder = settings.data_dir / "runtime"
        try:
            candidate, note = self._choose(settings)
            self._encoder = self.encoder_for(candidate)
        except RuntimeUnavailable as exc:
            raise ModelUnavailable(str(exc)) from exc
        self.runtime, self.precision = candidate.runtime, candidate.precision
        self.info = ModelInfo(
            name=settings.model_name,
            weights=description,
            random_weights=weights is None,
            device=self.device,
            precision=self.precision,
            dim=self.dim,
            precision_note=note,
            runtime=self.runtime,
        )

    # runtime and precision ----------------------------------------------------------------------
    def encoder_for(self, candidate: Candidate) -> ImageEncoder:
        """An encoder of this model on ``candidate``'s runtime (the benchmark compares them side by side)."""
        if candidate.runtime != "torch" and self.device != "cpu":
            raise RuntimeUnavailable(f"RUNTIME={candidate.runtime} runs on the CPU here; set DEVICE=cpu or RUNTIME=torch.")
        if candidate.precision == "int8" and self.device != "cpu":
            raise RuntimeUnavailable("PRECISION=int8 (dynamic quantisation) runs on the CPU; set DEVICE=cpu.")
        return build_encoder(candidate, self._fp32, self.image_size, self.runtime_folder, self.model_tag)

    def encode_with(self, encoder: ImageEncoder, batch: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 embeddings of ``batch`` by ``encoder``."""
        with torch.inference_mode():
            features = encoder(batch.to(self.device))
            return torch.nn.functional.normalize(features.float(), dim=-1)

    def embed_with(self, encoder: ImageEncoder, batch: torch.Tensor) -> np.ndarray:
        """``encode_with`` on the host, as numpy (waits for the device: timings include the work)."""
        return self.encode_with(encoder, batch).cpu().numpy()

    def _choose(self, settings: Settings) -> tuple[Candidate, str]:
        """The runtime and precision to use: as configured, else as recorded or measured on this machine."""
        requested = settings.precision
        if settings.runtime in ("auto", "torch") and requested == "auto":
            # only RUNTIME=auto may follow a record, which can name another runtime; a CPU's is kept
            # so the next start does not measure again (make bench replaces it with every runtime's)
            recorded = settings.runtime == "auto" and self.device == "cpu"
            key = machine_key(self.model_tag)
            decision = read_decision(self.runtime_folder, key) if recorded else None
            if decision is not None:
                return decision.chosen, decision.note()
            if recorded and not can_record(self.runtime_folder):
                # a read-only collection would measure again at every start: half a minute a command
                return TORCH_FP32, ("torch fp32: this collection is read-only, so nothing is measured at start-up "
                                    "(it could not be recorded and would be repeated at every start)")
            decision = self._measure_precision()
            if decision is None:
                return TORCH_FP32, "torch fp32: this CPU has no native bf16 (or torch no oneDNN for it)"
            if recorded:
                try:
                    write_decision(self.runtime_folder, key, decision)
                except OSError as exc:  # a full disk, say: the choice stands, measured again next start
                    log_event("runtime_decision_not_recorded", logging.WARNING, error=str(exc))
            return decision.chosen, f"{decision.note()}; measured at start-up on {PROBE_ORIGINALS * 2} probe images"
        if settings.runtime in ("auto", "torch"):
            return Candidate("torch", requested), f"torch {requested} as configured (PRECISION={requested})"
        if requested == "auto":
            decision = read_decision(self.runtime_folder, machine_key(self.model_tag))
            int8 = Candidate(settings.runtime, "int8")
            passed = decision is not None and any(m.candidate == int8 and m.unchanged for m in decision.measured)
            precision = "int8" if passed else "fp32"
            why = "int8 recorded as unchanged for an analyst" if passed else "no int8 recorded as unchanged here"
            return Candidate(settings.runtime, precision), f"{settings.runtime} {precision} (RUNTIME={settings.runtime}, {why})"
        return Candidate(settings.runtime, requested), f"{settings.runtime} {requested} as configured"

    def _measure_precision(self) -> Decision | None:
        """fp32 against the device's lower precision on the probe images, judged as ``make bench``
        judges runtimes: the lower one wins only if clearly faster *and* an analyst would see the same
        duplicate pairs, top anomalies and search results. None where this CPU has no native bf16 (or
        torch no bf16 kernels for it): nothing to measure, fp32 it is."""
        low = Candidate("torch", "fp16" if self.device == "cuda" else "bf16")
        if low.precision == "bf16" and (bf16_emulated() or not torch.backends.mkldnn.is_available()):
            return None
        prepared = probe_images(PROBE_ORIGINALS)
        tensors = torch.stack([self.preprocess_image(p.model_image) for p in prepared])
        encoders = {TORCH_FP32: self.encoder_for(TORCH_FP32), low: self.encoder_for(low)}
        batches = torch.split(tensors, self._probe_batch_size)
        return decision_from(compare_in_turn(encoders, batches, signals_of(prepared), self.embed_with))

    # inference ----------------------------------------------------------------------------------
    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """The model's input tensor for one RGB image; cheap, safe to call from worker threads."""
        return self.preprocess(image)

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """L2-normalised float32 embeddings for a preprocessed batch."""
        with self._mutex:
            return self.embed_with(self._encoder, batch)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_tensors(torch.stack([self.preprocess_image(i) for i in images]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings in the image space (for search by text)."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self._mutex, torch.inference_mode():
            features = self._fp32.encode_text(tokens)
            return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()
