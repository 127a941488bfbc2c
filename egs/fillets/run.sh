#!/usr/bin/env bash
# egs/fillets: real speech that installs offline. ~3 hours of Czech and Dutch voice acting from the game
# Fish Fillets NG (Debian packages fillets-ng-data, fillets-ng-data-cs, fillets-ng-data-nl; GPL), converted
# to a 16 kHz LibriSpeech-layout corpus in which dev and test voices are never heard in training.
#
# Usage: egs/fillets/run.sh [--stage 0] [--stop-stage 5] [--data data/fillets] [--exp exp/fillets]
#          [--recipe recipes/rvq_mel_pitch.yaml]
#          [--finetune-recipe recipes/rvq_mel_pitch_envelope.yaml]
#          [--prior-config recipes/prior_default.yaml]
#          [--fillets-src DIR] [--debs DIR] [--train-speakers cs-m,nl-v] [--jobs 0] [--force false]
#          [--festival-voices false] [--festival-lines 170] [--real-voices true] [--more-speech true]
#          [--set KEY=VALUE ...]
#   Paths are relative to the current folder. --fillets-src: already extracted data (a `dpkg -x` root or
#   /usr/share/games/fillets-ng) instead of downloading; --debs: a folder that already holds the three .debs.
#   VQAUDIO overrides the vqaudio command (stage 0 runs the local/*.py preparation scripts with its Python).
#   Codec options go through --set (e.g. --set train.max_steps=20000; they apply to RECIPE, the first training
#   stage). --finetune-recipe FILE[,FILE...] are the later stages, each trained from the one before
#   (--finetune-recipe '' trains RECIPE alone; a RECIPE of another architecture needs that or its own).
#   --eval-options adds flags to vqaudio eval (e.g. "--max-utterances 300 --n-q 1,2,4,8").
#
# Stages (a finished stage writes .stageN.done and is skipped next time; --force true reruns it):
#   0  fetch the three .debs (apt-get download, no root needed) unless --fillets-src/--debs, unpack them
#      with dpkg -x into DATA/root, convert the voice clips with local/prepare_fillets.py into
#      DATA/corpus/{train,dev,test} (speaker = <lang>-<character>; effects, music, templates, clips under
#      0.5 s skipped; train voices cs-m and nl-v, every other voice held out; hours per split, language and
#      speaker in DATA/corpus/summary.json), then `vqaudio prepare` DATA/{train,dev,test}.tsv; with
#      --real-voices true (the default) also 24 real non-English voices (letters and syllables of KLettres,
#      voice packs of Hedgewars; Debian klettres-data, hedgewars-data, GPL-2+ and GFDL-1.3; apt-get download,
#      no root; ~26 min after trimming; local/gather_voices.py) into DATA/real_voices; with --more-speech true
#      (the default) also 5 professional voices of the Asterisk PBX's prompts (en, es, fr, it, ru; Debian
#      asterisk-core-sounds-{en,es,fr,it,ru}-g722, CC-BY-SA-3.0 / CC-BY-3.0, 16 kHz G.722; apt-get download, no
#      root; 2.0 h after trimming, about 30 s; local/gather_speech.py, needs PyAV: pip install
#      'vqaudio[recipes]') into DATA/more_speech; both join the train voices in DATA/train_plus_voices.tsv, the
#      codec's training data (3.96 h). --festival-voices true (off by default since the pitch-row tokenizer;
#      earlier embedded models used it) also adds 7 synthetic voices (Festival reading the game's Czech,
#      Russian and Italian subtitles, --festival-lines each, ~68 min in all; local/synthesize_voices.py, needs
#      `apt-get install festival festvox-czech-dita festvox-czech-krb festvox-czech-machac festvox-czech-ph
#      festvox-ru festvox-italp16k festvox-itapc16k`) into DATA/festival_voices. A finished stage 0 is
#      skipped: --force true remakes it with the new options
#   1  train the codec on the train voices plus the real voices and Asterisk voices (those made; none:
#      DATA/train.tsv), with F0 and voicing in the tokens (the pitch row):
#      vqaudio train RECIPE --data DATA/train_plus_voices.tsv --valid DATA/dev.tsv --out EXP/codec_base
#      (recipes/rvq_mel_pitch.yaml, 6,000 steps, about 40 min on 2 CPU cores), then all of it again with the
#      band-envelope loss and a stronger usage-entropy penalty (recipes/rvq_mel_pitch_envelope.yaml, 4,000
#      steps, about 27 min):
#      vqaudio train rvq_mel_pitch_envelope.yaml --init-from EXP/codec_base ... --out EXP/codec
#      together the embedded tokenizer. The tokenizer before it (no pitch row): --recipe recipes/rvq_mel.yaml
#      --finetune-recipe recipes/rvq_mel_envelope.yaml,recipes/rvq_mel_spread20.yaml,recipes/rvq_mel_spread50.yaml
#      --festival-voices true; recipes/rvq_mel_gan.yaml (adversarial) is another second stage (it lowered
#      STOI: docs/EXPERIMENTS.md)
#   2  tokenize dev, test and the codec's training data into EXP/tokens/{dev,test,train}.npy
#   3  evaluate the codec on test (unseen voices, both languages) into EXP/report
#   4  train the WaveNet token prior on the train tokens (all the codec's training speech), evaluate it on
#      the test tokens (EXP/prior_eval.json); with the embedded tokenizer's tokens this is the embedded prior, which
#      `python tools/export_default_prior.py EXP/prior --test EXP/tokens/test.npy` copies into the package
#   5  sample 4 x 4 s from the prior into EXP/samples
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../common/lib.sh
source "$here/../common/lib.sh"

stage=0
stop_stage=5
data=data/fillets
exp=exp/fillets
recipe="$repo/recipes/rvq_mel_pitch.yaml"
finetune_recipe="$repo/recipes/rvq_mel_pitch_envelope.yaml"
prior_config="$repo/recipes/prior_default.yaml"
fillets_src=
debs=
train_speakers=cs-m,nl-v
festival_voices=false
festival_lines=170
real_voices=true
more_speech=true
jobs=0
eval_options=
sample_seconds=4
num_samples=4
force=false
option_names="stage stop_stage data exp recipe finetune_recipe prior_config fillets_src debs train_speakers jobs
  festival_voices festival_lines real_voices more_speech eval_options sample_seconds num_samples force"
parse_options "$@"
vqaudio_command

train_manifest="$data/train.tsv"
dev_manifest="$data/dev.tsv"
test_manifest="$data/test.tsv"
codec_manifest="$train_manifest"  # the codec's training data (every stage), tokenized as train for the prior
[ "$festival_voices" != "true" ] && [ "$real_voices" != "true" ] && [ "$more_speech" != "true" ] ||
  codec_manifest="$data/train_plus_voices.tsv"
packages=(fillets-ng-data fillets-ng-data-cs fillets-ng-data-nl)
speech_packages=(asterisk-core-sounds-{en,es,fr,it,ru}-g722)  # local/gather_speech.py

fetch_and_unpack() {  # fetch_and_unpack ROOT PACKAGE...: apt-get download (unless in --debs), dpkg -x into ROOT
  local deb_dir="${debs:-$data/debs}" root="$1" package deb
  shift
  mkdir -p "$deb_dir"
  for package in "$@"; do
    if ! compgen -G "$deb_dir/${package}_*.deb" >/dev/null; then
      command -v apt-get >/dev/null || die "apt-get not found: download $* (.deb) into --debs DIR"
      log "apt-get download ${package}"
      (cd "$deb_dir" && apt-get download "$package") ||
        die "apt-get download $package failed: run 'apt-get update' first, or put the .debs in --debs DIR"
    fi
  done
  rm -rf "$root"
  for package in "$@"; do
    for deb in "$deb_dir/${package}"_*.deb; do
      log "dpkg -x $(basename "$deb")"
      dpkg -x "$deb" "$root"
    done
  done
}

stage_prepare() {
  local src="$fillets_src" split
  if [ "$more_speech" = "true" ]; then  # before any work: local/gather_speech.py decodes G.722 with PyAV
    "$(python_command)" -c "import av" 2>/dev/null || die "PyAV not found by $(python_command): pip install \
'vqaudio[recipes]' (or pip install av), or pass --more-speech false"
  fi
  if [ -z "$src" ]; then
    command -v dpkg >/dev/null || die "dpkg not found: extract the fillets-ng .debs yourself and pass --fillets-src"
    fetch_and_unpack "$data/root" "${packages[@]}"
    src="$data/root"
  fi
  "$(python_command)" "$here/local/prepare_fillets.py" "$src" "$data/corpus" --train-speakers "$train_speakers" \
    --jobs "$jobs" --overwrite
  for split in train dev test; do
    "${vq[@]}" prepare "$data/corpus/$split" "$data/$split.tsv" --dev 0 --test 0 --overwrite
  done
  local voices=()
  if [ "$festival_voices" = "true" ]; then
    command -v festival >/dev/null || die "festival not found: apt-get install festival festvox-czech-dita \
festvox-czech-krb festvox-czech-machac festvox-czech-ph festvox-ru festvox-italp16k festvox-itapc16k, or pass \
--festival-voices false (then the model differs from the embedded one)"
    "$(python_command)" "$here/local/synthesize_voices.py" "$src" "$data/festival_voices" \
      --lines "$festival_lines" --overwrite
    voices+=("$data/festival_voices")
  fi
  if [ "$real_voices" = "true" ]; then
    fetch_and_unpack "$data/voices_root" klettres-data hedgewars-data
    "$(python_command)" "$here/local/gather_voices.py" "$data/voices_root" "$data/real_voices" --overwrite
    voices+=("$data/real_voices")
  fi
  if [ "$more_speech" = "true" ]; then
    fetch_and_unpack "$data/speech_root" "${speech_packages[@]}"
    "$(python_command)" "$here/local/gather_speech.py" "$data/speech_root" "$data/more_speech" --overwrite
    voices+=("$data/more_speech")
  fi
  if [ ${#voices[@]} -gt 0 ]; then
    "${vq[@]}" prepare "$data/corpus/train" "${voices[@]}" "$codec_manifest" --dev 0 --test 0 --overwrite
  fi
}

mkdir -p "$data" "$exp"
run_stage 0 "$data" "fetch, convert and prepare the fillets-ng voices" stage_prepare
run_stage 1 "$exp" "train the codec ($(basename "$recipe")${finetune_recipe:+, then ${finetune_recipe//$repo\//}})" \
  stage_train_codec
run_stage 2 "$exp" "tokenize dev, test and train" stage_tokenize
run_stage 3 "$exp" "evaluate the codec on test" stage_evaluate
run_stage 4 "$exp" "train and evaluate the token prior" stage_train_prior
run_stage 5 "$exp" "sample from the prior" stage_sample
log "finished stages ${stage}..${stop_stage}: ${exp}"
