"""Corpora: audio folders, list files, the LibriSpeech layout, manifests, held-out splits."""

from vqaudio.data.corpus import fill_headers, load_corpus
from vqaudio.data.librispeech import is_librispeech_tree, read_librispeech
from vqaudio.data.manifest import read_manifest, write_manifest
from vqaudio.data.prepare import PrepareResult, Splits, prepare_manifests, split_by_speaker
from vqaudio.data.utterance import Utterance, is_audio_file

__all__ = [
    "PrepareResult",
    "Splits",
    "Utterance",
    "fill_headers",
    "is_audio_file",
    "is_librispeech_tree",
    "load_corpus",
    "prepare_manifests",
    "read_librispeech",
    "read_manifest",
    "split_by_speaker",
    "write_manifest",
]
