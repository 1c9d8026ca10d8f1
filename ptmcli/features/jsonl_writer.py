"""JSON lines in the layout of google-research/bert's ``extract_features.py``, byte for byte.

One line per input text, ``{"linex_index": i, "features": [...]}``, each feature
``{"token": t, "layers": [{"index": l, "values": [...]}, ...]}`` with the values
rounded to 6 decimals and the default ``json.dumps`` spacing and ASCII escaping.
With ``--words`` the features are words; a combined layer's index is its name
("mean", "concat", "scalar-mix"). Pooled rows (``--pool``) have no tokens:
``{"linex_index": i, "layers": [{"index": l, "values": [...]}, ...]}``.
"""

from __future__ import annotations

import json
import sys

from ptmcli.features.output import STDOUT, AtomicFile

DECIMALS = 6


def _rounded(values: list[float]) -> list[float]:
    return [round(v, DECIMALS) for v in values]


def row_json(row, labels) -> str:
    """The JSON line of one ``FeatureRow`` (without the newline)."""
    values = row.values.tolist()  # float32 -> the exact double, then rounded as Python rounds it
    if row.units is None:
        layers = [{"index": label, "values": _rounded(values[k])} for k, label in enumerate(labels)]
        return json.dumps({"linex_index": row.index, "layers": layers})
    features = []
    for j, unit in enumerate(row.units):
        layers = [{"index": label, "values": _rounded(values[k][j])} for k, label in enumerate(labels)]
        features.append({"token": unit, "layers": layers})
    return json.dumps({"linex_index": row.index, "features": features})


class JsonlWriter:
    def __init__(self, output: str, layout, **_options) -> None:
        self.labels = list(layout.labels)
        self.atomic = None
        if output == STDOUT:
            self.stream = sys.stdout
        else:
            self.atomic = AtomicFile(output)
            self.stream = open(self.atomic.path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed in finish/abort

    def write(self, row) -> None:
        self.stream.write(row_json(row, self.labels))
        self.stream.write("\n")

    def finish(self) -> None:
        self.stream.flush()
        if self.atomic is not None:
            self.stream.close()
            self.atomic.commit()

    def abort(self) -> None:
        if self.atomic is not None:
            self.stream.close()
            self.atomic.discard()
