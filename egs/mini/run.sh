#!/usr/bin/env bash
# egs/mini: the whole vqaudio pipeline in a few minutes on a laptop CPU, on synthetic multi-speaker speech.
#
# Usage: egs/mini/run.sh [--stage 0] [--stop-stage 5] [--data data/mini] [--exp exp/mini]
#                        [--recipe recipes/tiny.yaml] [--max-steps 40] [--force false] [--set KEY=VALUE ...]
#                        [--eval-options "--max-utterances 3 --n-q 1,4"]
#   Paths are relative to the current folder. VQAUDIO overrides the vqaudio command
#   (e.g. VQAUDIO="python -m vqaudio.cli.main"), PYTHON the interpreter for stage 0 (default python3).
#
# Stages (a finished stage writes .stageN.done and is skipped next time; --force true reruns it):
#   0  synthesise ~4 minutes of speech with espeak-ng (10 voices x 8 sentences; a harmonic stand-in
#      without espeak-ng) in the LibriSpeech layout, and `vqaudio prepare` it into DATA/manifest.tsv plus
#      manifest.{train,dev,test}.tsv with 2 whole speakers held out for dev and 2 for test
#   1  train the codec: vqaudio train RECIPE --data train --valid dev --out EXP/codec (--max-steps steps)
#   2  tokenize dev, test and train into EXP/tokens/{dev,test,train}.npy
#   3  evaluate the codec on 3 test utterances (unseen speakers) at 1 and 4 codebooks, with the Opus and
#      Codec2 baselines, into EXP/report (--eval-options "" evaluates everything)
#   4  train the WaveNet token prior on the train tokens (conf/prior_tiny.yaml), evaluate it on the test
#      tokens into EXP/prior_eval.json
#   5  sample 4 x 4 s from the prior into EXP/samples
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../common/lib.sh
source "$here/../common/lib.sh"

stage=0
stop_stage=5
data=data/mini
exp=exp/mini
recipe="$repo/recipes/tiny.yaml"
prior_config="$here/conf/prior_tiny.yaml"
max_steps=40
speakers=10
sentences=8
eval_options="--max-utterances 3 --n-q 1,4"
sample_seconds=4
num_samples=4
force=false
option_names="stage stop_stage data exp recipe prior_config max_steps speakers sentences eval_options
  sample_seconds num_samples force"
parse_options "$@"
codec_overrides=(--set "train.max_steps=${max_steps}" ${codec_overrides[@]+"${codec_overrides[@]}"})
vqaudio_command

train_manifest="$data/manifest.train.tsv"
dev_manifest="$data/manifest.dev.tsv"
test_manifest="$data/manifest.test.tsv"

stage_make_data() {
  rm -rf "$data/corpus"
  "${PYTHON:-python3}" "$here/local/make_corpus.py" "$data/corpus" --speakers "$speakers" --sentences "$sentences"
  "${vq[@]}" prepare "$data/corpus" "$data/manifest.tsv" --dev 0.2 --test 0.2 --overwrite
}

mkdir -p "$data" "$exp"
run_stage 0 "$data" "synthesise a small multi-speaker corpus and its manifests" stage_make_data
run_stage 1 "$exp" "train the codec ($(basename "$recipe"), ${max_steps} steps)" stage_train_codec
run_stage 2 "$exp" "tokenize dev, test and train" stage_tokenize
run_stage 3 "$exp" "evaluate the codec on test" stage_evaluate
run_stage 4 "$exp" "train and evaluate the token prior" stage_train_prior
run_stage 5 "$exp" "sample from the prior" stage_sample
log "finished stages ${stage}..${stop_stage}: ${exp}"
