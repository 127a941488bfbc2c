#!/usr/bin/env bash
# egs/pocketsphinx: evaluate a tokenizer on English speech it never heard: the LibriVox clips and the other
# 16 kHz recordings shipped by Debian's pocketsphinx-testdata (public-domain LibriVox readings, CMU test
# utterances). Evaluation only: never train on these clips. Used for the embedded model's model card.
#
# Usage: egs/pocketsphinx/run.sh [--stage 0] [--stop-stage 1] [--data data/pocketsphinx]
#          [--exp exp/pocketsphinx] [--model default] [--debs DIR] [--force false]
#          [--eval-options "--n-q 1,2,4,5,8 --wer"]
#   --model: a model folder or file; "default" is the model embedded in the vqaudio package.
#   VQAUDIO overrides the vqaudio command.
#
# Stages (a finished stage writes .stageN.done and is skipped next time; --force true reruns it):
#   0  apt-get download pocketsphinx-testdata (no root needed; or --debs DIR holding the .deb), dpkg -x it,
#      and gather its speech as 16 kHz WAV in DATA/clips (local/gather_clips.py): test/data/librivox/*.wav,
#      test/data/cards/*.wav and the headerless test/data/*.raw recordings (16 kHz, 16-bit mono); the
#      manifest DATA/clips.tsv lists them with the package's transcripts (librivox and cards: 10 of 13)
#   1  vqaudio eval DATA/clips.tsv --model MODEL --out EXP/report (every bitrate, Opus and Codec2 beside
#      it); --wer scores against those transcripts, and the recognition of the original for the other 3
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../common/lib.sh
source "$here/../common/lib.sh"

stage=0
stop_stage=1
data=data/pocketsphinx
exp=exp/pocketsphinx
model=default
debs=
eval_options=
force=false
option_names="stage stop_stage data exp model debs eval_options force"
parse_options "$@"
vqaudio_command

stage_gather() {
  local deb_dir="${debs:-$data/debs}"
  mkdir -p "$deb_dir"
  if ! compgen -G "$deb_dir/pocketsphinx-testdata_*.deb" >/dev/null; then
    command -v apt-get >/dev/null || die "apt-get not found: put pocketsphinx-testdata_*.deb into --debs DIR"
    (cd "$deb_dir" && apt-get download pocketsphinx-testdata) ||
      die "apt-get download pocketsphinx-testdata failed: run 'apt-get update' first, or pass --debs DIR"
  fi
  rm -rf "$data/root"
  dpkg -x "$deb_dir"/pocketsphinx-testdata_*.deb "$data/root"
  "$(python_command)" "$here/local/gather_clips.py" "$data/root" "$data/clips" --manifest "$data/clips.tsv" \
    --overwrite
}

stage_evaluate_model() {
  local extra=() model_args=()
  read -r -a extra <<< "${eval_options:-}"
  [ "$model" = default ] || model_args=(--model "$model")
  require "$data/clips.tsv"
  "${vq[@]}" eval "$data/clips.tsv" ${model_args[@]+"${model_args[@]}"} --out "$exp/report" --overwrite \
    ${extra[@]+"${extra[@]}"}
}

mkdir -p "$data" "$exp"
run_stage 0 "$data" "gather the pocketsphinx-testdata speech as 16 kHz WAV" stage_gather
run_stage 1 "$exp" "evaluate ${model} on it" stage_evaluate_model
log "finished stages ${stage}..${stop_stage}: ${exp}/report"
