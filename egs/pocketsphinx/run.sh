#!/usr/bin/env bash
# egs/pocketsphinx: evaluate a tokenizer on English speech it never heard: the LibriVox clips and the other
# 16 kHz recordings shipped by Debian's pocketsphinx-testdata (public-domain LibriVox readings, CMU test
# utterances). Evaluation only: never train on these clips. Used for the embedded model's model card.
#
# Usage: egs/pocketsphinx/run.sh [--stage 0] [--stop-stage 3] [--data data/pocketsphinx]
#          [--exp exp/pocketsphinx] [--model default] [--debs DIR] [--force false]
#          [--eval-options "--n-q 1,2,4,5,8 --wer"] [--probe-options "--kmeans-k 1024,100 --threads 1"]
#          [--synth-speakers 12] [--synth-sentences 24] [--train-speakers 32] [--train-sentences 40]
#          [--codec-data data/fillets/train_plus_voices.tsv] [--valid-data data/fillets/dev.tsv]
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
#   2  vqaudio align DATA/clips.tsv DATA/alignments: pocketsphinx phone alignments of the 10 transcribed clips
#   3  vqaudio probe DATA/alignments --model MODEL --out EXP/probe: how phonetic the codes are (PNMI, purity,
#      run length per codebook, beside log-mel k-means and random codes; linear probes)
#   4  (not run by default: --stage 4 --stop-stage 5) a larger held-out English set for the probe: espeak-ng
#      voices reading sentences (egs/mini/local/make_corpus.py; 12 voices x 24 sentences, about 16 min) in
#      DATA/synth, its manifest DATA/synth.tsv, aligned into DATA/synth_alignments (--skip-bad: the few
#      utterances the aligner cannot follow are left out and listed in its meta.json)
#   5  vqaudio probe DATA/synth_alignments --model MODEL --out EXP/probe_synth
#   6  (not run by default: --stage 6 --stop-stage 6) a phone-labelled English TRAINING set, disjoint from
#      stage 4's held-out one (other espeak-ng voices and accents, other sentences): 32 voices x 40 of the 521
#      sentences of local/phone_training_sentences.txt (local/make_phone_training_set.py, about 60 min) in
#      DATA/phone_train, its manifest DATA/phone_train.tsv, aligned into DATA/phone_train_alignments
#      (--skip-bad; about 3% left out); for training a tokenizer whose first codebook predicts phones
#   7  (not run by default: --stage 7 --stop-stage 7) the embedded tokenizer's last stage: fine-tune MODEL with
#      recipes/rvq_mel_pitch_phonetic.yaml (its first codebook learns to predict stage 6's phones) on
#      --codec-data (the codec's training manifest, by default egs/fillets' data/fillets/train_plus_voices.tsv)
#      merged with stage 6's set, validated on --valid-data (data/fillets/dev.tsv), into EXP/phonetic: 3,000
#      steps, then resumed to 6,000 and to 9,000 (each a warm restart of the learning-rate schedule, as the
#      released model was trained; about 35 min per 3,000 steps on one CPU thread). To reproduce the release,
#      MODEL is its previous stage, egs/fillets' exp/fillets/codec (--model default would fine-tune the
#      release itself again); --set options are not passed to this stage. Then evaluate it with
#      --stage 1 --model EXP/phonetic and probe it with --stage 3 --stop-stage 5
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../common/lib.sh
source "$here/../common/lib.sh"

stage=0
stop_stage=3
data=data/pocketsphinx
exp=exp/pocketsphinx
model=default
debs=
eval_options=
probe_options=
synth_speakers=12
synth_sentences=24
train_speakers=32
train_sentences=40
codec_data=data/fillets/train_plus_voices.tsv
valid_data=data/fillets/dev.tsv
force=false
option_names="stage stop_stage data exp model debs eval_options probe_options synth_speakers synth_sentences
  train_speakers train_sentences codec_data valid_data force"
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
  local extra=()
  read -r -a extra <<< "${eval_options:-}"
  require "$data/clips.tsv"
  "${vq[@]}" eval "$data/clips.tsv" --model "$model" --out "$exp/report" --overwrite \
    ${extra[@]+"${extra[@]}"}
}

probe() {  # probe ALIGNMENTS OUT: the phonetic probe of MODEL
  local extra=()
  read -r -a extra <<< "${probe_options:-}"
  require "$1/meta.json"
  "${vq[@]}" probe "$1" --model "$model" --out "$2" --overwrite ${extra[@]+"${extra[@]}"}
}

stage_align_clips() {
  require "$data/clips.tsv"
  "${vq[@]}" align "$data/clips.tsv" "$data/alignments" --overwrite
}

stage_probe_clips() {
  probe "$data/alignments" "$exp/probe"
}

stage_synthesize() {
  command -v espeak-ng >/dev/null || die "espeak-ng not found: install the Debian package espeak-ng"
  rm -rf "$data/synth"
  "$(python_command)" "$here/../mini/local/make_corpus.py" "$data/synth" --speakers "$synth_speakers" \
    --sentences "$synth_sentences"
  "${vq[@]}" prepare "$data/synth" "$data/synth.tsv" --dev 0 --test 0 --overwrite
  "${vq[@]}" align "$data/synth.tsv" "$data/synth_alignments" --skip-bad --overwrite
}

stage_probe_synth() {
  probe "$data/synth_alignments" "$exp/probe_synth"
}

stage_phone_training_set() {
  command -v espeak-ng >/dev/null || die "espeak-ng not found: install the Debian package espeak-ng"
  rm -rf "$data/phone_train"
  "$(python_command)" "$here/local/make_phone_training_set.py" "$data/phone_train" --speakers "$train_speakers" \
    --sentences-per-speaker "$train_sentences"
  "${vq[@]}" prepare "$data/phone_train" "$data/phone_train.tsv" --dev 0 --test 0 --overwrite
  "${vq[@]}" align "$data/phone_train.tsv" "$data/phone_train_alignments" --skip-bad --overwrite
}

stage_phonetic_codec() {
  require "$codec_data" "$valid_data" "$data/phone_train.tsv" "$data/phone_train_alignments"
  local steps
  "${vq[@]}" prepare "$codec_data" "$data/phone_train.tsv" "$exp/phonetic_train.tsv" --dev 0 --test 0 --overwrite
  for steps in 3000 6000 9000; do  # the same command resumes the run folder, to a longer schedule each time
    "${vq[@]}" train "$here/../../recipes/rvq_mel_pitch_phonetic.yaml" --init-from "$model" \
      --data "$exp/phonetic_train.tsv" --phones "$data/phone_train_alignments" --valid "$valid_data" \
      --out "$exp/phonetic" --max-steps "$steps" --set train.checkpoint_every=250
  done
}

mkdir -p "$data" "$exp"
run_stage 0 "$data" "gather the pocketsphinx-testdata speech as 16 kHz WAV" stage_gather
run_stage 1 "$exp" "evaluate ${model} on it" stage_evaluate_model
run_stage 2 "$data" "align the transcribed clips' phones (pocketsphinx)" stage_align_clips
run_stage 3 "$exp" "phonetic probe of ${model} on the aligned clips" stage_probe_clips
run_stage 4 "$data" "synthesize and align a larger English set (espeak-ng)" stage_synthesize
run_stage 5 "$exp" "phonetic probe of ${model} on the synthetic set" stage_probe_synth
run_stage 6 "$data" "synthesize and align a phone-labelled training set (espeak-ng)" stage_phone_training_set
run_stage 7 "$exp" "fine-tune ${model} so that its first codebook carries phones" stage_phonetic_codec
log "finished stages ${stage}..${stop_stage}: ${exp}"
