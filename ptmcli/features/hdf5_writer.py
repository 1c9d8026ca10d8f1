"""HDF5 in the layout of allennlp's ``elmo`` command, so code written for its files reads ours.

One float32 dataset per input text, keyed by its 0-based line number as a
string: ``(layers, tokens, dim)`` when layers are kept (``--combine none``, as
``allennlp elmo --all``), ``(tokens, dim)`` for a combined layer (as ``--top``
and ``--average``); pooled rows drop the tokens axis. The dataset
``sentence_to_index`` holds one string, the JSON object mapping each text to its
key (a repeated text keeps its last key, as allennlp's does). The layout is
also stored as JSON in the file attribute ``ptm_features``. Needs h5py
(``pip install 'ptm[hdf5]'``).
"""

from __future__ import annotations

import json

from ptmcli.errors import PtmError
from ptmcli.features.output import AtomicFile

SENTENCE_TO_INDEX = "sentence_to_index"


def import_h5py():
    try:
        import h5py
    except ImportError:
        raise PtmError("--output-format hdf5 needs the h5py package: pip install 'ptm[hdf5]' (or pip install h5py)") from None
    return h5py


class Hdf5Writer:
    def __init__(self, output: str, layout, **_options) -> None:
        self.h5py = import_h5py()
        self.keep_layers = layout.combine == "none"
        self.atomic = AtomicFile(output)
        self.file = self.h5py.File(self.atomic.path, "w")
        self.file.attrs["ptm_features"] = json.dumps(layout.describe())
        # Held until the end: h5py writes the mapping as one string.
        self.sentence_to_index: dict[str, str] = {}

    def write(self, row) -> None:
        key = str(row.index)
        data = row.values if self.keep_layers else row.values[0]
        self.file.create_dataset(key, data.shape, dtype="float32", data=data)
        self.sentence_to_index[row.record.source] = key

    def finish(self) -> None:
        index = self.file.create_dataset(SENTENCE_TO_INDEX, (1,), dtype=self.h5py.string_dtype())
        index[0] = json.dumps(self.sentence_to_index)
        self.file.close()
        self.atomic.commit()

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            self.atomic.discard()
