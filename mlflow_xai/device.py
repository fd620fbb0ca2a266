"""Device choice: ``auto`` picks CUDA when present, else CPU; a missing device is an error."""

from __future__ import annotations

from mlflow_xai.errors import DeviceError

VALID = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | None = "auto") -> str:
    """Return a concrete torch device string for ``device``, or raise :class:`DeviceError`."""
    import torch

    spec = (device or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device='{device}' was requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda or 'no'}). "
                "Use device='auto' to fall back to the CPU, or device='cpu'."
            )
        if ":" in spec:
            index = spec.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise DeviceError(
                    f"device='{device}' does not exist: this machine has "
                    f"{torch.cuda.device_count()} CUDA device(s), numbered from 0."
                )
        return spec
    if spec == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError("device='mps' was requested but MPS is not available here. "
                              "Use device='auto' or device='cpu'.")
        return "mps"
    raise DeviceError(f"unknown device '{device}'. Valid values: {VALID}.")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device out-of-memory error (the batch should be halved and retried)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
