"""The one place a device name becomes a ``torch.device``: the CLI's ``--device``, the study's ``device:`` and
``measure`` all accept the same names and fail with the same one-line errors."""

from __future__ import annotations

import torch

from ..errors import OrchestratorError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device, *, half: bool = False, flag: str = "device") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N``, a bare index ``N`` or ``auto`` (CUDA when there is one) as a device.

    A CUDA device this machine lacks is an error here, before any model is loaded; ``half`` (fp16 inference)
    needs CUDA. ``flag`` names the setting in the messages (``--device`` for a command).
    """
    d = str(name).strip().lower()
    if d == "auto":
        d = "cuda" if torch.cuda.is_available() else "cpu"
    elif d.isdigit():
        d = f"cuda:{d}"
    try:
        dev = torch.device(d)
    except RuntimeError:
        raise OrchestratorError(f"{flag}: expected cpu, cuda, cuda:N, N or auto, got {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OrchestratorError(f"{flag} {name!r}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OrchestratorError(f"{flag} {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise OrchestratorError(f"{flag}: expected cpu, cuda, cuda:N, N or auto, got {name!r}")
    if half and dev.type != "cuda":
        raise OrchestratorError("--half: float16 inference needs a CUDA device (on CPU it is slower and less exact)")
    return dev
