"""``ptm convert``: checkpoints to and from Hugging Face transformers, word2vec and ONNX.

Conversion is data: ``archs.py`` has one table entry per architecture (the
transformers classes it maps to, key maps, config maps; ``hf_bert.py``,
``hf_gpt.py``). ``detect.py`` tells what a source is, ``sources.py`` reads either
format into ptm's terms and checks it, ``writers.py`` writes a ptm checkpoint or
a transformers directory, ``hf_files.py`` reads and writes weight files,
``tokenizer_files.py`` carries the tokenizer across, ``word2vec.py`` and
``onnx_export.py`` write the other formats, ``ptm_model.py`` builds a runnable
module from a checkpoint that may lack heads. Nothing here unpickles code.
"""
