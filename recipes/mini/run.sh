#!/usr/bin/env bash
# Mini recipe: the whole pipeline on offline data that fits a 2-core CPU in a few hours (a GPU in minutes):
# the bundled real speech (LibriSpeech 251 speakers x 1 file, Kathleen 1102 sentences) plus 32 synthetic
# voices from Debian's espeak-ng / flite / festival. 20 LibriSpeech speakers (recipes/mini/splits/) are held
# out of training entirely and are the sources and targets of the 40 eval pairs.
#
#   recipes/mini/run.sh                                      # all stages
#   recipes/mini/run.sh --stage 4 --conf conf/adain_vc.yaml  # retrain the VC model, then convert + evaluate
#   recipes/mini/run.sh --conf conf/debug.yaml --exp exp/mini_debug --stage 3   # a quick plumbing check
#
# Stages (each logs to $EXP_DIR/logs/stage<N>.log; stages 4-6 to stage<N>_<conf name>.log):
#   0  check the bundled speech, the TTS programs, the voiceconv commands and the evaluation judges
#   1  synthetic voices + train.csv + unseen-speaker clips + eval pairs   local/make_synthetic.py, make_manifest.py
#   2  features: trimmed log-mels + audio cache of train.csv              voiceconv prepare
#   3  vocoder, shared by every VC config                                 voiceconv train-vocoder
#   4  VC model                                                           voiceconv train
#   5  convert the 40 eval pairs                                          voiceconv batch
#   6  evaluate: speaker similarity / acceptance, WER, F0, RTF            voiceconv evaluate
#
# Options (each also settable as the variable of the same name in the environment):
#   --stage N / --stop-stage N   first and last stage to run (default 0 and 6)
#   --conf FILE                  VC config (default conf/adain_vc.yaml); relative paths are tried from the current
#                                folder, then from recipes/mini/
#   --vocoder-conf FILE          vocoder config (default: conf/vocoder_<conf name>.yaml when it exists, else
#                                conf/vocoder.yaml)
#   --vocoder DIR                use this trained vocoder and skip stage 3
#   --speech DIR                 the bundled speech folder (default <repo>/../shared/data/speech)
#   --exp DIR                    experiment folder (default <repo>/exp/mini)
#   --data DIR                   synthetic audio, manifests and features (default <repo>/data/mini)
#   --per-speaker N              sentences per synthetic voice (default 30)
#   --nj N                       parallel processes for synthesis and feature extraction (default 2)
#   --device DEV                 cpu, cuda, cuda:N (default: cuda when available)
# Every stage is resumable: existing synthetic files, feature shards, train states and converted pairs are reused.
set -euo pipefail

RECIPE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$RECIPE_DIR/../.." && pwd)

SPEECH_DIR=${SPEECH_DIR:-$REPO_DIR/../shared/data/speech}  # bundled real speech (manifest.csv + FLAC)
EXP_DIR=${EXP_DIR:-$REPO_DIR/exp/mini}     # runs, logs, converted audio, reports
DATA_DIR=${DATA_DIR:-$REPO_DIR/data/mini}  # synthetic audio, manifests, clips, features
NJ=${NJ:-2}                           # parallel synthesis / feature-extraction processes
CONF=${CONF:-conf/adain_vc.yaml}      # VC config (overlay of voiceconv/conf/)
VOCODER_CONF=${VOCODER_CONF:-}        # empty = conf/vocoder_<conf name>.yaml if present, else conf/vocoder.yaml
VOCODER=${VOCODER:-}                  # a trained vocoder directory; skips stage 3
PER_SPEAKER=${PER_SPEAKER:-30}        # sentences per synthetic voice
DEVICE=${DEVICE:-}                    # empty = voiceconv's default (CUDA when available)
stage=${STAGE:-0}
stop_stage=${STOP_STAGE:-6}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage|--stop_stage) stop_stage=$2; shift 2 ;;
    --conf) CONF=$2; shift 2 ;;
    --vocoder-conf) VOCODER_CONF=$2; shift 2 ;;
    --vocoder) VOCODER=$2; shift 2 ;;
    --speech) SPEECH_DIR=$2; shift 2 ;;
    --exp) EXP_DIR=$2; shift 2 ;;
    --data) DATA_DIR=$2; shift 2 ;;
    --per-speaker) PER_SPEAKER=$2; shift 2 ;;
    --nj) NJ=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Paths the user typed are relative to the current folder; configs may also be relative to the recipe.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
find_conf() {
  if [ -f "$1" ]; then absolute "$1"
  elif [ -f "$RECIPE_DIR/$1" ]; then echo "$RECIPE_DIR/$1"
  else echo "run.sh: config $1 not found (here or in $RECIPE_DIR)" >&2; exit 2; fi
}
CONF=$(find_conf "$CONF")
tag=$(basename "$CONF" .yaml)
if [ -z "$VOCODER_CONF" ]; then
  VOCODER_CONF=conf/vocoder.yaml
  if [ -f "$RECIPE_DIR/conf/vocoder_$tag.yaml" ]; then VOCODER_CONF=conf/vocoder_$tag.yaml; fi
fi
VOCODER_CONF=$(find_conf "$VOCODER_CONF")
EXP_DIR=$(absolute "$EXP_DIR")
DATA_DIR=$(absolute "$DATA_DIR")
SPEECH_DIR=$(absolute "$SPEECH_DIR")
[ -n "$VOCODER" ] && VOCODER=$(absolute "$VOCODER")
RUN_DIR=$EXP_DIR/$tag
VOCODER_RUN=$EXP_DIR/vocoder
device_args=(); [ -n "$DEVICE" ] && device_args=(--device "$DEVICE")
mkdir -p "$EXP_DIR/logs"

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

# model_dir RUN: the run's best/ when validation produced one, else last/.
model_dir() { if [ -d "$1/best" ]; then echo "$1/best"; else echo "$1/last"; fi; }
vocoder_dir() { if [ -n "$VOCODER" ]; then echo "$VOCODER"; else model_dir "$VOCODER_RUN"; fi; }
# resume_or_config RUN CONF: resume a run that has a train state, else start it from CONF.
resume_or_config() { if [ -f "$1/train_state.pt" ]; then echo --resume; else echo --config "$2"; fi; }

stage_0() {
  local ok=1
  if [ -f "$SPEECH_DIR/manifest.csv" ]; then echo "bundled speech: $SPEECH_DIR"
  else
    echo "no manifest.csv in $SPEECH_DIR: pass --speech DIR (the folder with librispeech/, kathleen/, manifest.csv)"
    ok=0
  fi
  local missing=()
  for tool in espeak-ng flite text2wave sox; do command -v "$tool" > /dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing TTS programs for stage 1: ${missing[*]}; on Debian/Ubuntu install them with:"
    echo "  sudo apt-get install -y espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox"
    ok=0
  fi
  local help
  help=$(voiceconv --help 2>&1) || { echo "the voiceconv command is missing: pip install -e ."; return 1; }
  for command in prepare train train-vocoder batch evaluate; do
    if ! grep -qE "^ +$command( |$)" <<< "$help"; then echo "voiceconv $command is not available"; ok=0; fi
  done
  if ! python -c "import resemblyzer, pocketsphinx" 2>/dev/null; then
    echo "stage 6 needs the evaluation judges: pip install -e '.[eval]' (resemblyzer, pocketsphinx)"
  fi
  echo "config: $CONF; vocoder config: $VOCODER_CONF; experiment: $EXP_DIR; data: $DATA_DIR"
  [ "$ok" = 1 ]
}

stage_1() {
  python "$RECIPE_DIR/local/make_synthetic.py" --speech-dir "$SPEECH_DIR" --out "$DATA_DIR/synthetic" \
    --per-speaker "$PER_SPEAKER" --jobs "$NJ"
  python "$RECIPE_DIR/local/make_manifest.py" --speech-dir "$SPEECH_DIR" --data-dir "$DATA_DIR"
}

stage_2() {
  # The mel front end comes from the VC config (model.mel) so the features always match the model.
  python - "$CONF" "$DATA_DIR/mel.yaml" <<'EOF'
import sys
from voiceconv.config import save_yaml
from voiceconv.training.vc_trainer import load_experiment
save_yaml({"mel": load_experiment(sys.argv[1]).model.mel.to_dict()}, sys.argv[2])
EOF
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

run_stage 0 "check data and tools"
run_stage 1 "synthetic voices, manifests, eval pairs"
run_stage 2 "features"
run_stage 3 "vocoder"
run_stage 4 "VC model ($tag)"
run_stage 5 "convert eval pairs"
run_stage 6 "evaluate"
