"""The WaveNet token prior: a causal dilated-conv language model over token frames.

    prior = vqaudio.Prior.load("exp/prior1")
    codes = prior.generate(500, temperature=0.9, top_k=50, seed=0)   # [n_q, 500]
    nats = prior.log_prob(codes)                                     # [n_q, 500]

Modules: ``wavenet`` (the network), ``model`` (``Prior``: files, likelihood, sampling; ``describe``),
``generation`` (fast and naive sampling), ``sampling`` (tokenizer lookup, prompts, output files), ``data``
(corpora, windows, speakers), ``training``, ``ngram`` (unigram / bigram baselines), ``evaluation`` (bits per
token / frame / second).
"""

from vqaudio.prior.prior import Prior, describe

__all__ = ["Prior", "describe"]
