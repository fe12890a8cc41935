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

# shellcheck source=../common/stages.sh
source "$REPO_DIR/recipes/common/stages.sh"

RECIPE_OPTIONS=(--corpus CORPUS --mic MIC)  # this recipe's own flags and the variables they set
parse_options "$@"
DATA_DIR=${DATA_DIR:-$EXP_DIR/data}
setup_paths
if [ -n "$CORPUS" ]; then CORPUS=$(absolute "$CORPUS"); fi

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
  check_tools || ok=0
  [ "$ok" = 1 ]
}

stage_1() {
  python "$RECIPE_DIR/local/prepare_vctk.py" --corpus "$CORPUS" --out "$DATA_DIR" --mic "$MIC"
}

run_stages "check corpus and tools" "manifests and eval pairs"
