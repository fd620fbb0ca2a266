"""Device choice: ``auto`` picks CUDA when present, else CPU; a missing device is an error."""

from __future__ import annotations

from mlflow_xai.errors import DeviceError

VALID = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | None = "auto") -> str:
    """Return a concrete torch device string for ``device``, or raise :class:`DeviceError`."""
    spec = (device or "auto").strip().lower()
    if spec == "cpu" or (spec == "auto" and not _may_have_cuda()):
        return "cpu"
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
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


def _may_have_cuda() -> bool:
    """False when CUDA surely is absent, answered without importing torch (about 1.5 s the
    first time, which a tree model explained by ``evaluate()`` would otherwise pay): torch
    not imported yet on Linux without the NVIDIA driver."""
    import os
    import sys

    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return True
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device out-of-memory error (the batch should be halved and retried)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


#: Default memory budget for one model call's inputs on the CPU.
CPU_BUDGET_BYTES = 256 * 2**20
#: Fraction of free device memory one model call's inputs may take on CUDA.
CUDA_BUDGET_FRACTION = 0.25
MIN_BATCH_ROWS = 64
MAX_BATCH_ROWS = 2**20
#: On the CPU larger batches stop paying: past ~64k rows a small MLP runs up to 2.5x slower
#: per row (cache misses), measured with benchmarks/bench_attributions.py.
CPU_MAX_BATCH_ROWS = 2**16


def batch_rows(n_features: int, device: str, *, budget_bytes: int | None = None,
               bytes_per_value: int = 8, overhead: float = 4.0) -> int:
    """Rows per model call so that inputs and intermediates stay within a memory budget.

    ``overhead`` accounts for the model's own activations (a few times the input size).
    """
    if budget_bytes is None:
        budget_bytes = CPU_BUDGET_BYTES
        if device.startswith("cuda"):
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(device))
            budget_bytes = int(free * CUDA_BUDGET_FRACTION)
    rows = int(budget_bytes / (max(1, n_features) * bytes_per_value * overhead))
    cap = MAX_BATCH_ROWS if device.startswith(("cuda", "mps")) else CPU_MAX_BATCH_ROWS
    return max(MIN_BATCH_ROWS, min(cap, rows))


class PeakMemory:
    """Peak memory while a block runs: CUDA allocator peak on a GPU, else process RSS.

    On the CPU a sampler thread reads /proc/self/statm every 20 ms (Linux); elsewhere the
    figure is None rather than a guess.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_bytes: int | None = None
        self._stop = None
        self._thread = None

    def __enter__(self) -> PeakMemory:
        import threading

        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
            return self
        if not _rss_bytes():
            return self
        self.peak_bytes = _rss_bytes()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.02):
                self.peak_bytes = max(self.peak_bytes or 0, _rss_bytes() or 0)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            import torch

            self.peak_bytes = int(torch.cuda.max_memory_allocated(torch.device(self.device)))
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes or 0, _rss_bytes() or 0)

    @property
    def peak_mb(self) -> float | None:
        return None if self.peak_bytes is None else round(self.peak_bytes / 2**20, 1)


def _rss_bytes() -> int | None:
    try:
        import os

        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
