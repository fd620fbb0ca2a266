"""Each benchmark script owns one section of ``benchmarks/RESULTS.md``, between its markers."""

from __future__ import annotations

from pathlib import Path

DEFAULT_HEADER = "# Benchmark results\n"


def replace_section(path: Path, start_mark: str, end_mark: str, body: str,
                    header: str = DEFAULT_HEADER) -> None:
    """Replace the text between ``start_mark`` and ``end_mark`` with ``body`` (appending the
    marked section when it is missing), leaving every other section as it was."""
    text = path.read_text() if path.exists() else header
    section = f"{start_mark}\n{body.rstrip()}\n{end_mark}"
    if start_mark in text and end_mark in text:
        head, rest = text.split(start_mark, 1)
        _, tail = rest.split(end_mark, 1)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else "unknown CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
