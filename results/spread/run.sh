#!/usr/bin/env bash
# How much one recipe's result moves with the engine and the thread count: the default division
# run, seeds 0-2, numba and numpy engines, 1 and 2 threads, from the checkout at /work/spread.
T=/work/spread/.venv/bin/tinygrok
cd /work/runs/spread
$T run --preset tiny --steps 100 --out warm --force -q > /dev/null 2>&1   # compile the kernels once
$T run division --steps 60 --out warm-div --force -q > /dev/null 2>&1
$T run division --steps 60 --engine numpy --out warm-div --force -q > /dev/null 2>&1
for seed in 0 1 2; do
  for engine in numba numpy; do
    for threads in 1 2; do
      out=division-$engine-t$threads-s$seed
      grep -q '"status": "finished"' $out/summary.json 2>/dev/null && continue
      if [ -f $out/checkpoint.npz ]; then
        $T resume $out --threads $threads -q >> $out.log 2>&1
        continue
      fi
      $T run division --seed $seed --engine $engine --threads $threads --out $out --force -q > $out.log 2>&1
    done
  done
done
