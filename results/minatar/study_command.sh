#!/bin/bash
# The MinAtar study of results/minatar/README.md. Run from the repository root
# (the study configs include gin_configs/minatar/*.gin by that path) on a
# 2-core CPU: 2 runs at once, one XLA thread each. CONFIGS, GAMES and ROOT
# override the configs, the games and the results root.
set -e
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
C=results/minatar/configs
CONFIGS=${CONFIGS:-bbf,bbf_no_resets,bbf_no_spr,bbf_no_annealing,bbf_no_wd,bbf_n10,bbf_gamma099,dqn,rainbow}
FILES=$(echo "$CONFIGS" | tr ',' '\n' | sed "s#^#$C/#; s#\$#.gin#" | paste -sd,)
python -m bbf_dopamine.sweep --gin_files "$FILES" --games "${GAMES:-breakout}" \
  --seeds 0-2 --root "${ROOT:-results/minatar/runs}" --parallel 2 --no_report
