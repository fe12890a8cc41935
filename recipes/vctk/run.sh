#!/usr/bin/env bash
# VCTK recipe: one-shot voice conversion trained on the seen VCTK speakers, evaluated on 20 unseen ones.
#
#   recipes/vctk/run.sh --corpus /data/VCTK-Corpus-0.92                         # all stages, AdaIN-VC
#   recipes/vctk/run.sh --corpus /data/VCTK-Corpus-0.92 --conf conf/adain_vc_vq.yaml --stage 4
#   recipes/vctk/run.sh --stage 5 --stop-stage 6                                 # convert + evaluate again
#
# Stages (each logs to $EXP_DIR/logs/stage<N>.log; stages 4-6 to stage<N>_<conf name>.log):
#   0  check the corpus, the voiceconv commands and the evaluation judges
#   1  manifests (train / valid / unseen) and the resolved eval pairs          local/prepare_vctk.py
#   2  features: trimmed log-mels + audio cache of train.csv                    voiceconv prepare
#   3  vocoder, shared by every VC config                                       voiceconv train-vocoder
#   4  VC model                                                                 voiceconv train
#   5  convert the eval pairs (40 unseen + 20 seen pairs)                       voiceconv batch
#   6  evaluate: speaker similarity / acceptance, WER, MCD, F0, RTF            voiceconv evaluate
#
# Options (each also settable as the variable of the same name in the environment):
#   --stage N / --stop-stage N   first and last stage to run (default 0 and 6)
#   --conf FILE                  VC config (default conf/adain_vc.yaml); relative paths are tried from the current
#                                folder, then from recipes/vctk/
#   --vocoder-conf FILE          vocoder config (default: conf/vocoder_<conf name>.yaml when it exists, else
#                                conf/vocoder.yaml; so --conf conf/debug.yaml picks conf/vocoder_debug.yaml)
#   --vocoder DIR                use this trained vocoder and skip stage 3
#   --corpus DIR                 VCTK folder holding txt/ and wav48_silence_trimmed/ (0.92) or wav48/ (0.80)
#   --mic mic1|mic2              microphone of release 0.92 (default mic1)
#   --exp DIR                    experiment folder (default <repo>/exp/vctk)
#   --data DIR                   manifests and features (default $EXP_DIR/data)
#   --nj N                       worker processes for feature extraction (default 4)
#   --device DEV                 cpu, cuda, cuda:N (default: cuda when available)
# Every stage is resumable: re-running a stage continues training runs from train_state.pt, reuses finished
# feature shards and skips pairs already converted.
set -euo pipefail

RECIPE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$RECIPE_DIR/../.." && pwd)

CORPUS=${CORPUS:-}                    # VCTK root (see stage 0 for where to get it)
EXP_DIR=${EXP_DIR:-$REPO_DIR/exp/vctk} # runs, logs, converted audio, reports
DATA_DIR=${DATA_DIR:-}                # manifests + features; empty = $EXP_DIR/data
NJ=${NJ:-4}                           # feature-extraction workers
CONF=${CONF:-conf/adain_vc.yaml}      # VC config (overlay of voiceconv/conf/)
VOCODER_CONF=${VOCODER_CONF:-}        # empty = conf/vocoder_<conf name>.yaml if present, else conf/vocoder.yaml
VOCODER=${VOCODER:-}                  # a trained vocoder directory; skips stage 3
MIC=${MIC:-mic1}                      # VCTK 0.92 microphone
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
    --corpus) CORPUS=$2; shift 2 ;;
    --mic) MIC=$2; shift 2 ;;
    --exp) EXP_DIR=$2; shift 2 ;;
    --data) DATA_DIR=$2; shift 2 ;;
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
DATA_DIR=$(absolute "${DATA_DIR:-$EXP_DIR/data}")
[ -n "$CORPUS" ] && CORPUS=$(absolute "$CORPUS")
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
  if [ -z "$CORPUS" ] || [ ! -d "$CORPUS/txt" ]; then
    echo "VCTK not found (--corpus '${CORPUS}'). Get it from https://datashare.ed.ac.uk/handle/10283/3443:"
    echo "  release 0.92: VCTK-Corpus-0.92.zip (11 GB; wav48_silence_trimmed/pXXX/pXXX_NNN_mic{1,2}.flac + txt/)"
    echo "  release 0.80: VCTK-Corpus.tar.gz (wav48/pXXX/pXXX_NNN.wav + txt/); both layouts work"
    echo "then: unzip VCTK-Corpus-0.92.zip -d VCTK-Corpus-0.92 && recipes/vctk/run.sh --corpus VCTK-Corpus-0.92"
    ok=0
  elif [ -d "$CORPUS/wav48_silence_trimmed" ]; then echo "corpus: $CORPUS (release 0.92 layout, $MIC)"
  elif [ -d "$CORPUS/wav48" ]; then echo "corpus: $CORPUS (release 0.80 layout)"
  else echo "$CORPUS has txt/ but neither wav48_silence_trimmed/ nor wav48/"; ok=0; fi
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
  python "$RECIPE_DIR/local/prepare_vctk.py" --corpus "$CORPUS" --out "$DATA_DIR" --mic "$MIC"
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

run_stage 0 "check corpus and tools"
run_stage 1 "manifests and eval pairs"
run_stage 2 "features"
run_stage 3 "vocoder"
run_stage 4 "VC model ($tag)"
run_stage 5 "convert eval pairs"
run_stage 6 "evaluate"
