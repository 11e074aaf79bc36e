# What the shell benchmarks share (source it after scripts/lib.sh).

# median: the middle of the numbers on stdin, separated by spaces or newlines (of an even count, the lower of the
# two middle ones); "-" when there are none.
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }
# ratio A B: A / B as "1.23×" (0.00× when B is not positive).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f×", (b > 0 ? a / b : 0)}'; }
