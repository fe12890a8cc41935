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

# shellcheck source=../common/stages.sh
source "$REPO_DIR/recipes/common/stages.sh"

RECIPE_OPTIONS=(--speech SPEECH_DIR --per-speaker PER_SPEAKER)  # this recipe's own flags and the variables they set
parse_options "$@"
setup_paths
SPEECH_DIR=$(absolute "$SPEECH_DIR")

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
  check_tools || ok=0
  [ "$ok" = 1 ]
}

stage_1() {
  python "$RECIPE_DIR/local/make_synthetic.py" --speech-dir "$SPEECH_DIR" --out "$DATA_DIR/synthetic" \
    --per-speaker "$PER_SPEAKER" --jobs "$NJ"
  python "$RECIPE_DIR/local/make_manifest.py" --speech-dir "$SPEECH_DIR" --data-dir "$DATA_DIR"
}

run_stages "check data and tools" "synthetic voices, manifests, eval pairs"
