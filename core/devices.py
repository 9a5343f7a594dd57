"""Which torch device the work runs on, decided in one place for the model and the neighbour graph.

``DEVICE=auto`` means CUDA when this process can see a GPU, else the CPU; asking for CUDA where
there is none is a configuration error, reported before any heavy work starts.
"""

from __future__ import annotations

import torch

from core.settings import SettingsError

DEVICES = ("cpu", "cuda")


def resolve_device(requested: str) -> str:
    """The device that ``DEVICE=requested`` ("auto", "cpu" or "cuda") means on this machine."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(requested).type


def check_device(device: str) -> torch.device:
    """``device`` ("cpu" or "cuda") as a torch device, or an error saying why it cannot be used."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise SettingsError("DEVICE=cuda but no CUDA device is available. Use DEVICE=auto or DEVICE=cpu.")
    return torch.device(device)
