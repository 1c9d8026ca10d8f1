"""What the input readers produce: documents, and counters for progress and summaries."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Document:
    source: str  # path, or "<stdin>"
    line: int  # 1-based line number where the document starts in source
    paragraphs: list[str] = field(default_factory=list)  # non-empty text lines, no trailing newline
    title: str | None = None


@dataclass
class ReadStats:
    """Counters filled while reading, for progress bars and the final summary.

    ``bytes_read`` counts bytes of the inputs as stored (compressed bytes for
    ``.gz``), so it can be compared with ``total_input_bytes``.
    """

    files: int = 0
    bytes_read: int = 0
    documents: int = 0
    lines: int = 0
    skipped_lines: int = 0
    replaced_lines: int = 0
    unbroken_files: list[tuple[str, int]] = field(default_factory=list)
    """Plain-text inputs without a blank line, read as one document each: (name, lines)."""
