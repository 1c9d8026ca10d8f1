"""Contextual features from a checkpoint: read texts, run the encoder, pick and combine layers, write vectors.

``ptm extract-features`` is built from these modules, each one step:
``config`` (the options), ``readers`` (input lines to records), ``encoding``
(records to model inputs), ``alignment`` (sub-tokens to input words),
``model`` (loading the encoder and running it to a stack of layers),
``layers`` (selection, combination, pooling), ``extract`` (the chunked,
length-sorted pipeline), ``output`` (targets and atomic files) and one writer
per output format. Nothing heavy is imported here, so ``ptm --help`` stays instant.
"""
