"""``ptm eval``: what a checkpoint is worth, measured.

One module per concern:

- ``config``: ``EvalConfig``, every flag of ``ptm eval`` (light: read while building ``--help``);
- ``corpus``: raw text -> sentences of token ids with their word counts, streamed;
- ``sequences``: sentences -> model-length token blocks (BERT, ELMo);
- ``windows``: a token stream -> sliding context windows, each token scored once (GPT);
- ``causal``, ``masked``, ``bidirectional``: the scoring loops of GPT, BERT and ELMo;
- ``language_model``: picks the scoring loop for a checkpoint's family and gathers its metrics;
- ``results``: perplexities from summed losses, and how metrics are printed;
- ``progress``: the progress bar;
- ``sampling``: text generation from prompts (GPT);
- ``labeled``: metrics of finetuned checkpoints with a task head.

``ptmcli.commands.eval.run`` looks at the checkpoint and picks one of these.
"""
