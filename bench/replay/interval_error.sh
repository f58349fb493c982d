#!/bin/bash
# Per-interval comparison of a replay's timeline with archi-sim's (OUT/sim_timeline.csv vs
# OUT/sim/sim_timeline.csv): mean |served/s difference| / mean served/s over the rows both have,
# and the median of |p99 difference| / live p99 over the rows where both served requests.
d=$1
j=$(paste -d, <(cut -d, -f6,8 "$d/sim_timeline.csv") <(cut -d, -f6,8 "$d/sim/sim_timeline.csv"))
echo "$j" | awk -F, 'NR > 1 && $1 != "" && $3 != "" { n++; ad += ($1 > $3 ? $1 - $3 : $3 - $1); s += $1 }
  END { printf "throughput per interval: mean abs error %.1f%% of the mean (%d intervals); ", 100 * ad / s, n }'
echo "$j" | awk -F, 'NR > 1 && $2 > 0 && $4 > 0 { print ($4 > $2 ? $4 - $2 : $2 - $4) / $2 }' | sort -g |
  awk '{ e[NR] = $1 } END { printf "p99 per interval: median abs error %.1f%% (%d intervals)\n", 100 * e[int((NR + 1) / 2)], NR }'
