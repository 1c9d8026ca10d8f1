"""ptm's checkpoint directory: written atomically, read strictly, weights read in one place.

``directory`` holds the layout (config.json, model.safetensors, trainer/,
tokenizer files) and the run directory's step checkpoints; ``weights`` reads
safetensors; ``loading`` rebuilds a checkpoint's model through its family.
The layout is documented in docs/formats.md.
"""

from ptmcli.checkpoint.directory import (  # noqa: F401
    CONFIG,
    FORMAT,
    OPTIMIZER,
    STATE,
    TOKENIZER_FILES,
    TRAINER,
    VERSION,
    WEIGHTS,
    copy_tokenizer_files,
    list_step_checkpoints,
    prune_checkpoints,
    read_config,
    read_trainer,
    resolve_checkpoint,
    save_checkpoint,
    state_dict_for_saving,
    step_dir_name,
    write_json,
)
from ptmcli.checkpoint.weights import (  # noqa: F401
    load_partial_weights,
    load_weights,
    read_tensors,
    read_weights,
)
