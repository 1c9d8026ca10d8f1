"""One array of pooled vectors: ``.npy`` or ``.safetensors``, row i for input text i.

The shape is ``(texts, dim)`` for a combined layer and ``(texts, layers, dim)``
when layers are kept (``--combine none``). Rows stream to a scratch file as
they come (the number of texts is unknown until the end), and the final file is
assembled from it: a header, then the same bytes. safetensors files hold one
tensor, ``features``, and the layout as JSON strings in their metadata.
"""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np

from ptmcli.features.output import AtomicFile

TENSOR = "features"
_COPY_BYTES = 16 << 20


class ArrayWriter:
    def __init__(self, output: str, layout, *, fmt: str = "npy", **_options) -> None:
        self.fmt = fmt
        self.layout = layout
        self.keep_layers = layout.combine == "none"
        self.rows = 0
        self.atomic = AtomicFile(output)
        self.scratch = AtomicFile(output + ".rows")
        self.handle = open(self.scratch.path, "wb")  # noqa: SIM115 - closed in finish/abort

    def write(self, row) -> None:
        data = row.values if self.keep_layers else row.values[0]
        self.handle.write(np.ascontiguousarray(data, dtype="<f4").tobytes())
        self.rows += 1

    def _shape(self) -> list[int]:
        per_row = [self.layout.num_layers, self.layout.dim] if self.keep_layers else [self.layout.dim]
        return [self.rows, *per_row]

    def _header(self) -> bytes:
        shape = self._shape()
        if self.fmt == "npy":
            from io import BytesIO

            buffer = BytesIO()
            np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
            return buffer.getvalue()
        nbytes = int(np.prod(shape)) * 4
        metadata = {key: value if isinstance(value, str) else json.dumps(value) for key, value in self.layout.describe().items()}
        header = json.dumps({"__metadata__": metadata, TENSOR: {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}},
                            separators=(",", ":")).encode("utf-8")
        header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned
        return struct.pack("<Q", len(header)) + header

    def finish(self) -> None:
        self.handle.close()
        with open(self.atomic.path, "wb") as out, open(self.scratch.path, "rb") as rows:
            out.write(self._header())
            shutil.copyfileobj(rows, out, _COPY_BYTES)
        self.scratch.discard()
        self.atomic.commit()

    def abort(self) -> None:
        self.handle.close()
        self.scratch.discard()
        self.atomic.discard()
