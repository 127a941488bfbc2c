# Shared helpers of the egs/*/run.sh recipes (sourced, not run): logging, option parsing, stages.
#
# A recipe sets its defaults as shell variables, lists them in `option_names`, then calls
# `parse_options "$@"`: every `--some-name VALUE` (or `--some-name=VALUE`) sets `some_name`.
# `--set KEY=VALUE` (repeatable) collects codec config overrides in the array `codec_overrides`.
# Stages run in order from --stage to --stop-stage; a finished stage leaves a `.done` sentinel and is
# skipped on the next run (rerun it with --force true, or delete its sentinel).

log() {  # log MESSAGE...: a time-stamped line on stderr, prefixed with the recipe and line
  local caller="${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}"
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${caller}) $*" >&2
}

die() {  # die MESSAGE...: log and exit 1
  log "error: $*"
  exit 1
}

usage() {  # print the header comment of the running recipe (the lines starting with '#' after the shebang)
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
}

codec_overrides=()

parse_options() {
  local name value var names
  names=" $(echo ${option_names}) "  # one line, single spaces
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --*=*) name="${1%%=*}"; value="${1#*=}"; shift ;;
      --*)
        [ $# -ge 2 ] || die "option $1 needs a value (see --help)"
        name="$1"; value="$2"; shift 2 ;;
      *) die "unexpected argument '$1': options are --name VALUE (see --help)" ;;
    esac
    if [ "$name" = "--set" ]; then
      codec_overrides+=(--set "$value")
      continue
    fi
    var="${name#--}"; var="${var//-/_}"
    case "$names" in
      *" ${var} "*) printf -v "$var" '%s' "$value" ;;
      *) die "unknown option ${name}; known:$(echo "$names" | sed "s/ \([a-z_]*\)/ --\1/g; s/_/-/g")" ;;
    esac
  done
  [[ "$stage" =~ ^-?[0-9]+$ && "$stop_stage" =~ ^-?[0-9]+$ ]] || die "--stage and --stop-stage take integers"
}

# run_stage N SENTINEL_DIR DESCRIPTION FUNCTION: run FUNCTION if N is within --stage..--stop-stage and
# SENTINEL_DIR/.stageN.done is absent (or --force true); write the sentinel when it succeeds.
run_stage() {
  local number="$1" sentinel_dir="$2" description="$3" function="$4"
  [ "$stage" -le "$number" ] && [ "$stop_stage" -ge "$number" ] || return 0
  local sentinel="${sentinel_dir}/.stage${number}.done"
  if [ -f "$sentinel" ] && [ "${force:-false}" != "true" ]; then
    log "stage ${number}: ${description}: already done (${sentinel}); skipped"
    return 0
  fi
  log "stage ${number}: ${description}"
  local start=$SECONDS
  "$function"
  mkdir -p "$sentinel_dir"
  date '+%Y-%m-%d %H:%M:%S' > "$sentinel"
  log "stage ${number}: done in $((SECONDS - start)) s"
}

require() {  # require FILE...: die unless every file exists (inputs of a stage that an earlier stage makes)
  local file
  for file in "$@"; do
    [ -e "$file" ] || die "missing ${file}: run the earlier stages first (--stage 0)"
  done
}

# ---------------------------------------------------------------------------------------------------
# Stages 1-5, the same in every recipe. They read: vq (the vqaudio command, an array), exp, recipe,
# train_manifest, dev_manifest, test_manifest, prior_config, sample_seconds, num_samples, codec_overrides,
# eval_options, finetune_recipe (optional: later training stages, comma-separated, each from the one before),
# codec_manifest (optional: the codec's training data, every stage; default train_manifest, which the token
# prior trains on).
# ---------------------------------------------------------------------------------------------------
vqaudio_command() {  # the vqaudio command as an array `vq`: $VQAUDIO if set (e.g. "python -m vqaudio.cli.main")
  read -r -a vq <<< "${VQAUDIO:-vqaudio}"
  command -v "${vq[0]}" >/dev/null || die "'${vq[0]}' not found: install vqaudio (pip install -e .) or set VQAUDIO"
}

python_command() {  # the Python that runs vqaudio (for the local/ preparation scripts, which import it)
  local exe
  exe="$(command -v "${vq[0]}")"
  case "$(basename "$exe")" in
    python*) echo "$exe" ;;
    *) head -1 "$exe" | sed 's/^#!//' ;;
  esac
}

stage_train_codec() {  # RECIPE -> EXP/codec; with finetune_recipe (FILE[,FILE...]) each later stage starts
  # from the one before: RECIPE -> EXP/codec_base -> EXP/codec_<name of FILE> ... -> EXP/codec (the last)
  local codec_data="${codec_manifest:-$train_manifest}" stages=() i out previous
  require "$recipe" "$codec_data" "$dev_manifest"
  [ -z "${finetune_recipe:-}" ] || IFS=, read -r -a stages <<< "$finetune_recipe"
  require ${stages[@]+"${stages[@]}"}
  out="$exp/codec"
  [ ${#stages[@]} -eq 0 ] || out="$exp/codec_base"
  "${vq[@]}" train "$recipe" --data "$codec_data" --valid "$dev_manifest" --out "$out" \
    ${codec_overrides[@]+"${codec_overrides[@]}"}
  for ((i = 0; i < ${#stages[@]}; i++)); do
    previous="$out"
    out="$exp/codec"
    [ $((i + 1)) -eq ${#stages[@]} ] || out="$exp/codec_$(basename "${stages[i]}" .yaml)"
    "${vq[@]}" train "${stages[i]}" --init-from "$previous" --data "$codec_data" --valid "$dev_manifest" \
      --out "$out"
  done
}

stage_tokenize() {
  require "$exp/codec"
  local split manifest
  for split in dev test train; do
    manifest="${split}_manifest"
    # the prior learns from all the speech the codec learned from (codec_manifest: the train split and more)
    [ "$split" != train ] || [ -z "${codec_manifest:-}" ] || manifest=codec_manifest
    require "${!manifest}"
    "${vq[@]}" tokenize "${!manifest}" "$exp/tokens/${split}.npy" --model "$exp/codec" --overwrite
  done
}

stage_evaluate() {  # eval_options (a string of extra flags, e.g. "--max-utterances 3") may be empty
  require "$exp/codec" "$test_manifest"
  local extra=()
  read -r -a extra <<< "${eval_options:-}"
  # --overwrite: this stage runs only when not yet done (or --force true), so an old report is stale
  "${vq[@]}" eval "$test_manifest" --model "$exp/codec" --out "$exp/report" --overwrite ${extra[@]+"${extra[@]}"}
}

stage_train_prior() {
  require "$prior_config" "$exp/tokens/train.npy" "$exp/tokens/dev.npy" "$exp/tokens/test.npy"
  "${vq[@]}" prior train "$exp/tokens/train.npy" --valid "$exp/tokens/dev.npy" --config "$prior_config" \
    --out "$exp/prior"
  # one evaluation: the JSON (written atomically) for scripts, the table for people and the report
  "${vq[@]}" prior eval "$exp/tokens/test.npy" --prior "$exp/prior" --json-out "$exp/prior_eval.json" \
    --overwrite > "$exp/prior_eval.txt"
  log "prior on test tokens: $(tr -d '\n' < "$exp/prior_eval.json")"
  if [ -f "$exp/report/report.md" ]; then  # the prior's rows join the codec's report (stage 3)
    sed -i '/^## Token prior/,$d' "$exp/report/report.md"
    { echo; echo "## Token prior"; echo; echo '```'; cat "$exp/prior_eval.txt"; echo '```'; } >> "$exp/report/report.md"
  fi
}

stage_sample() {
  require "$exp/prior"
  "${vq[@]}" prior sample --prior "$exp/prior" --seconds "$sample_seconds" -n "$num_samples" "$exp/samples" \
    --overwrite
}
