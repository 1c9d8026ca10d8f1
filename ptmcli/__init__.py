"""ptm: pretrain and finetune language models from the command line."""

__version__ = "0.1.0"
