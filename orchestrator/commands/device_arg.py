"""``--device`` for the commands that run a model: checked once, with a one-line error."""

from __future__ import annotations

from ..errors import OrchestratorError


def parse_device(name: str, half: bool = False):
    """A ``torch.device`` for ``cpu`` or ``cuda[:N]``; CUDA must be there, and ``half`` needs CUDA."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise OrchestratorError(f"--device: expected cpu or cuda[:N], got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise OrchestratorError(f"--device: expected cpu or cuda[:N], got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OrchestratorError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if half and device.type != "cuda":
        raise OrchestratorError("--half: float16 inference needs a CUDA device (on CPU it is slower and less exact)")
    return device
