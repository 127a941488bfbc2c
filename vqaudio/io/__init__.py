"""File formats and atomic writes: every byte vqaudio reads or writes passes through here.

* ``atomic``: a file or folder appears complete or not at all (errors, Ctrl-C).
* ``audio``: any soundfile-supported file in, mono float32 at the model's rate; WAV/FLAC out.
* ``inputs``: what every input must satisfy (regular files, usable utterance ids, TSV-safe names, UTF-8).
* ``model_file``: safetensors weights + JSON config (tokenizers and priors), weights hash, never pickle.
* ``token_file``: the token corpus (``out.npy`` + ``out.index.tsv`` + ``out.meta.json``), ``load_tokens``.

Nothing is imported here, so each stays cheap to import on its own.
"""
