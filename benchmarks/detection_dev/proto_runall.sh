#!/bin/bash
# usage: proto_runall.sh DEV|HELD
cd /work/wt/multitype
export PYTHONPATH=/work/wt/multitype OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
n=$(python -c "import sys; sys.path.insert(0,'benchmarks/detection_dev'); import proto_scenarios as p; print(len(p.$1))")
for seed in ${SEEDS:-0 1 2}; do for i in $(seq 0 $((n-1))); do
  out=/tmp/mt/$1_${i}_s${seed}.npz; [ -f $out ] && continue
  sc=$(python -c "import sys,json; sys.path.insert(0,'benchmarks/detection_dev'); import proto_scenarios as p; print(json.dumps(p.$1[$i]))")
  python benchmarks/detection_dev/proto_cache.py "$sc" $seed 50,20 $out
done; done
echo DONE
