"""Evaluation: ``vqaudio eval`` and the pieces it is built from (each importable on its own).

* ``metrics``: SI-SDR, log-mel L1, multi-resolution STFT distance, PESQ-WB, STOI of one clip, and
  ``score_clip``, every metric of one clip (these and the voice metrics).
* ``voice``: voicing recall / precision, F0 error and HNR drop against Praat, DNSMOS P.835, word error rate
  (pocketsphinx); ``clip_checks``: the exceptions and input checks both share.
* ``alignment``: remove a codec's delay before scoring (cross-correlation lag search).
* ``baselines``: Codec2 and Opus through their command-line tools.
* ``codebook_stats``: per-codebook used fraction, entropy and perplexity, and their accumulator over
  training steps (numpy; takes torch tensors without importing torch).
* ``evaluate``: the run over a corpus; ``run_evaluation`` writes the report folder atomically.
* ``results``: what a run measured (options, per-system scores), shared by ``evaluate`` and ``report``.
* ``report``: report.json and report.md; ``html_report``: report.html (the tables, figures and audio players
  of the examples on one self-contained page); ``plots``: the figures.
* ``phone_alignment``: pocketsphinx forced alignment of transcribed English speech -> phone segments and
  per-frame phone labels (``vqaudio align``, the alignment folder's format).
* ``phonetic_probe``: how phonetic a tokenizer's codes are (PNMI, purities, run lengths per codebook beside
  log-mel k-means and random codes; linear probes of the latent); ``probe_report`` writes it
  (``vqaudio probe``, ``vqaudio eval --probe``).

Nothing is imported here, so ``from vqaudio.evaluation.codebook_stats import codebook_usage`` stays cheap
(no matplotlib, no torch).
"""
