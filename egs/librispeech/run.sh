#!/usr/bin/env bash
# egs/librispeech: train and evaluate a vqaudio codec and token prior on LibriSpeech (or any tree in its
# layout: <root>/<split>/<speaker>/<chapter>/<spk>-<chap>-<utt>.flac + <spk>-<chap>.trans.txt).
#
# Usage: egs/librispeech/run.sh --librispeech /path/to/LibriSpeech [--stage 0] [--stop-stage 5]
#          [--data data/librispeech] [--exp exp/librispeech] [--recipe recipes/rvq_mel.yaml]
#          [--train-splits "train-clean-100"] [--dev-split dev-clean] [--test-split test-clean]
#          [--prior-config recipes/prior_small.yaml] [--force false] [--set KEY=VALUE ...]
#   Paths are relative to the current folder. Split defaults: train-clean-100 if present, else every
#   train-* split; dev-clean / test-clean if present, else the first dev-* / test-* split. The official
#   splits have disjoint speakers, so evaluation is on unseen voices. VQAUDIO overrides the vqaudio command.
#   Codec training options go through --set (e.g. --set train.max_steps=50000 --set train.batch_size=16).
#   --eval-options adds flags to vqaudio eval (e.g. "--max-utterances 500 --n-q 1,2,4,8").
#
# Stages (a finished stage writes .stageN.done and is skipped next time; --force true reruns it):
#   0  vqaudio prepare: DATA/train.tsv (the train splits), DATA/dev.tsv, DATA/test.tsv with lengths,
#      speakers and transcripts
#   1  train the codec: vqaudio train RECIPE --data DATA/train.tsv --valid DATA/dev.tsv --out EXP/codec
#   2  tokenize dev, test and train into EXP/tokens/{dev,test,train}.npy
#   3  evaluate the codec on test into EXP/report (metrics, baselines, plots)
#   4  train the WaveNet token prior on the train tokens, evaluate it on the test tokens (EXP/prior_eval.json)
#   5  sample 4 x 4 s from the prior into EXP/samples
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../common/lib.sh
source "$here/../common/lib.sh"

stage=0
stop_stage=5
librispeech=
data=data/librispeech
exp=exp/librispeech
recipe="$repo/recipes/rvq_mel.yaml"
prior_config="$repo/recipes/prior_small.yaml"
train_splits=
dev_split=
test_split=
eval_options=
sample_seconds=4
num_samples=4
force=false
option_names="stage stop_stage librispeech data exp recipe prior_config train_splits dev_split test_split
  eval_options sample_seconds num_samples force"
parse_options "$@"
vqaudio_command

train_manifest="$data/train.tsv"
dev_manifest="$data/dev.tsv"
test_manifest="$data/test.tsv"

first_split() {  # first_split PREFERRED PATTERN: PREFERRED if it exists, else the first split matching PATTERN
  if [ -d "$librispeech/$1" ]; then echo "$1"; return; fi
  local candidate
  for candidate in "$librispeech"/$2; do
    [ -d "$candidate" ] && { basename "$candidate"; return; }
  done
}

stage_prepare() {
  [ -n "$librispeech" ] || die "pass --librispeech /path/to/LibriSpeech (the folder holding train-clean-100, dev-clean, ...)"
  [ -d "$librispeech" ] || die "--librispeech $librispeech: no such folder"
  if [ -z "$train_splits" ]; then
    if [ -d "$librispeech/train-clean-100" ]; then
      train_splits=train-clean-100
    else
      train_splits="$(cd "$librispeech" && for d in train-*; do [ -d "$d" ] && printf '%s ' "$d"; done)"
    fi
  fi
  dev_split="${dev_split:-$(first_split dev-clean 'dev-*')}"
  test_split="${test_split:-$(first_split test-clean 'test-*')}"
  [ -n "$train_splits" ] || die "$librispeech has no train-* split; pass --train-splits"
  [ -n "$dev_split" ] || die "$librispeech has no dev-* split; pass --dev-split"
  [ -n "$test_split" ] || die "$librispeech has no test-* split; pass --test-split"
  log "train: ${train_splits}; dev: ${dev_split}; test: ${test_split}"
  local sources=() split
  for split in $train_splits; do
    [ -d "$librispeech/$split" ] || die "$librispeech/$split: no such split"
    sources+=("$librispeech/$split")
  done
  "${vq[@]}" prepare "${sources[@]}" "$train_manifest" --dev 0 --test 0 --overwrite
  "${vq[@]}" prepare "$librispeech/$dev_split" "$dev_manifest" --dev 0 --test 0 --overwrite
  "${vq[@]}" prepare "$librispeech/$test_split" "$test_manifest" --dev 0 --test 0 --overwrite
}

mkdir -p "$data" "$exp"
run_stage 0 "$data" "prepare LibriSpeech manifests" stage_prepare
run_stage 1 "$exp" "train the codec ($(basename "$recipe"))" stage_train_codec
run_stage 2 "$exp" "tokenize dev, test and train" stage_tokenize
run_stage 3 "$exp" "evaluate the codec on test" stage_evaluate
run_stage 4 "$exp" "train and evaluate the token prior" stage_train_prior
run_stage 5 "$exp" "sample from the prior" stage_sample
log "finished stages ${stage}..${stop_stage}: ${exp}"
