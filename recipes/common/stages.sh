# Shared by recipes/*/run.sh (sourced, not run): option parsing, paths, the stage runner, stage 0's
# tool checks and stages 2-6, which are the same for every corpus. A recipe sets RECIPE_DIR, REPO_DIR
# and its defaults, lists its own flags in RECIPE_OPTIONS, defines stage_0 and stage_1, then calls
#   parse_options "$@"; setup_paths; run_stages "<stage 0 title>" "<stage 1 title>"
# Variables read here: RECIPE_DIR RECIPE_OPTIONS CONF VOCODER_CONF VOCODER EXP_DIR DATA_DIR NJ DEVICE stage
# stop_stage. setup_paths sets tag (the VC config's name), RUN_DIR, VOCODER_RUN and device_args.
declare -a RECIPE_OPTIONS=("${RECIPE_OPTIONS[@]+"${RECIPE_OPTIONS[@]}"}")  # empty when a recipe has none

# usage: the comment block at the top of the recipe's run.sh, as help.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

# recipe_option FLAG VALUE: set the variable that RECIPE_OPTIONS (pairs of flag and variable name) names
# for FLAG; non-zero for a flag the recipe does not have.
recipe_option() {
  local k
  for ((k = 0; k + 1 < ${#RECIPE_OPTIONS[@]}; k += 2)); do
    if [ "${RECIPE_OPTIONS[k]}" = "$1" ]; then printf -v "${RECIPE_OPTIONS[k + 1]}" '%s' "$2"; return 0; fi
  done
  return 1
}

# parse_options ARGS...: the common flags, then the recipe's own (recipe_option); each takes a value.
parse_options() {
  while [ $# -gt 0 ]; do
    case "$1" in -h|--help) usage 0 ;; esac
    if [ $# -lt 2 ]; then echo "run.sh: $1 needs a value (see --help)" >&2; exit 2; fi
    case "$1" in
      --stage) stage=$2 ;;
      --stop-stage|--stop_stage) stop_stage=$2 ;;
      --conf) CONF=$2 ;;
      --vocoder-conf) VOCODER_CONF=$2 ;;
      --vocoder) VOCODER=$2 ;;
      --exp) EXP_DIR=$2 ;;
      --data) DATA_DIR=$2 ;;
      --nj) NJ=$2 ;;
      --device) DEVICE=$2 ;;
      *) if ! recipe_option "$1" "$2"; then
           echo "run.sh: unknown option $1 (see --help)" >&2; exit 2
         fi ;;
    esac
    shift 2
  done
}

# Paths the user typed are relative to the current folder; configs may also be relative to the recipe.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
find_conf() {
  if [ -f "$1" ]; then absolute "$1"
  elif [ -f "$RECIPE_DIR/$1" ]; then echo "$RECIPE_DIR/$1"
  else echo "run.sh: config $1 not found (here or in $RECIPE_DIR)" >&2; exit 2; fi
}

# setup_paths: absolute paths, the run's tag (the VC config's name) and its directories.
setup_paths() {
  CONF=$(find_conf "$CONF")
  tag=$(basename "$CONF" .yaml)
  if [ -z "$VOCODER_CONF" ]; then
    VOCODER_CONF=conf/vocoder.yaml
    if [ -f "$RECIPE_DIR/conf/vocoder_$tag.yaml" ]; then VOCODER_CONF=conf/vocoder_$tag.yaml; fi
  fi
  VOCODER_CONF=$(find_conf "$VOCODER_CONF")
  EXP_DIR=$(absolute "$EXP_DIR")
  DATA_DIR=$(absolute "$DATA_DIR")
  if [ -n "$VOCODER" ]; then VOCODER=$(absolute "$VOCODER"); fi
  RUN_DIR=$EXP_DIR/$tag
  VOCODER_RUN=$EXP_DIR/vocoder
  device_args=(); if [ -n "$DEVICE" ]; then device_args=(--device "$DEVICE"); fi
  mkdir -p "$EXP_DIR/logs"
}

# run_stage N TITLE: run the function stage_N with its output in the log file (and on screen).
run_stage() {
  local n=$1 log rc
  if [ "$n" -lt "$stage" ] || [ "$n" -gt "$stop_stage" ]; then return 0; fi
  if [ "$n" -ge 4 ]; then log=$EXP_DIR/logs/stage${n}_$tag.log; else log=$EXP_DIR/logs/stage$n.log; fi
  echo "=== stage $n: $2 (log: $log)"
  local start=$SECONDS
  # A subshell with its own set -e (not an `if` condition, where bash would ignore set -e inside the function).
  set +e
  ( set -e; "stage_$n" ) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then echo "stage $n failed (exit $rc); see $log" >&2; exit "$rc"; fi
  echo "=== stage $n done in $((SECONDS - start)) s"
}

# run_stages TITLE0 TITLE1: every stage from $stage to $stop_stage.
run_stages() {
  run_stage 0 "$1"
  run_stage 1 "$2"
  run_stage 2 "features"
  run_stage 3 "vocoder"
  run_stage 4 "VC model ($tag)"
  run_stage 5 "convert eval pairs"
  run_stage 6 "evaluate"
}

# model_dir RUN: the run's best/ when validation produced one, else last/.
model_dir() { if [ -d "$1/best" ]; then echo "$1/best"; else echo "$1/last"; fi; }
vocoder_dir() { if [ -n "$VOCODER" ]; then echo "$VOCODER"; else model_dir "$VOCODER_RUN"; fi; }
# resume_or_config RUN CONF: resume a run that has a train state, else start it from CONF.
resume_or_config() { if [ -f "$1/train_state.pt" ]; then echo --resume; else echo --config "$2"; fi; }

# check_tools: stage 0's checks of the voiceconv commands and the judges; non-zero when a command is missing.
check_tools() {
  local help ok=0
  help=$(voiceconv --help 2>&1) || { echo "the voiceconv command is missing: pip install -e ."; return 1; }
  for command in prepare train train-vocoder batch evaluate; do
    if ! grep -qE "^ +$command( |$)" <<< "$help"; then echo "voiceconv $command is not available"; ok=1; fi
  done
  if ! python -c "import resemblyzer, pocketsphinx" 2>/dev/null; then
    echo "stage 6 needs the evaluation judges: pip install -e '.[eval]' (resemblyzer, pocketsphinx)"
  fi
  echo "config: $CONF; vocoder config: $VOCODER_CONF; experiment: $EXP_DIR; data: $DATA_DIR"
  return "$ok"
}

stage_2() {
  # The mel front end comes from the VC config (model.mel) so the features always match the model.
  python - "$CONF" "$DATA_DIR/mel.yaml" <<'PYTHON'
import sys
from voiceconv.config import save_yaml
from voiceconv.training.vc_trainer import load_experiment
save_yaml({"mel": load_experiment(sys.argv[1]).model.mel.to_dict()}, sys.argv[2])
PYTHON
  voiceconv prepare "$DATA_DIR/train.csv" --out "$DATA_DIR/prepared" --config "$DATA_DIR/mel.yaml" \
    --workers "$NJ" --quiet
}

stage_3() {
  if [ -n "$VOCODER" ]; then echo "using the vocoder $VOCODER (--vocoder); nothing to train"; return 0; fi
  # shellcheck disable=SC2046  # resume_or_config prints one or two words on purpose
  voiceconv train-vocoder $(resume_or_config "$VOCODER_RUN" "$VOCODER_CONF") --data "$DATA_DIR/prepared" \
    --out "$VOCODER_RUN" "${device_args[@]}" --quiet
}

stage_4() {
  # shellcheck disable=SC2046
  voiceconv train $(resume_or_config "$RUN_DIR" "$CONF") --data "$DATA_DIR/prepared" --out "$RUN_DIR" \
    --vocoder "$(vocoder_dir)" "${device_args[@]}" --quiet
}

stage_5() {
  voiceconv batch "$DATA_DIR/eval_pairs.csv" --out-dir "$RUN_DIR/converted" --model "$(model_dir "$RUN_DIR")" \
    --vocoder "$(vocoder_dir)" "${device_args[@]}" --quiet
}

stage_6() {
  # --model/--vocoder add the reference rows (vocoder resynthesis, self-reconstruction) beside the conversion.
  voiceconv evaluate "$DATA_DIR/eval_pairs.csv" --converted "$RUN_DIR/converted" --out "$RUN_DIR/eval" \
    --model "$(model_dir "$RUN_DIR")" --vocoder "$(vocoder_dir)" "${device_args[@]}" --quiet
  echo "report: $RUN_DIR/eval/report.md"
}
