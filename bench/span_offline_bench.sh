#!/usr/bin/env bash
# Passive capture, offline: how fast `callrecd --span-read` turns a capture of N concurrent SIP
# calls into record files, next to what the usual tools do with the same file in the same run.
#
#   bench/span_offline_bench.sh [BUILD_DIR]          (default: build)
#
# Steps (everything on tmpfs, /dev/shm, removed at the end):
#   1. callrec-pcapgen --calls N --seconds S: N calls up at once (default N = 10000; record
#      files beyond the descriptor budget are reopened per write, so any N fits), S = 10.
#   2. Each tool 3 times, median wall time -> frames/s:
#        callrecd --span-read FILE (whole pipeline: decode, reassembly, SIP/SDP, calls, RTP into
#          record files on tmpfs, catalog), under /usr/bin/time -v (peak RSS)
#        tcpdump -r FILE -w /dev/null (read and write back every frame: the floor)
#        tshark -r FILE -q (tshark skips dissection when nothing is printed, filtered or tapped)
#        tshark -r SMALL -q -z rtp,streams (full dissection, SIP/SDP sets up the RTP streams)
#        sngrep -N -q -I SMALLER (no interface, quiet: reads the file, follows dialogs and their
#          RTP, exits at the end of the file)
#      tshark's dissection and sngrep are too slow for the big file (sngrep's cost per packet
#      grows with the number of dialogs: it scans them), so they read captures of the same shape
#      with fewer calls (TSHARK_CALLS, SNGREP_CALLS); tcpdump reads every capture, and each ratio
#      is against tcpdump on the same file.
#   3. Memory: callrecd's peak RSS / calls up at the peak, and the marginal cost per call
#      between the small and the big capture.
#
# Environment: CALLS, SECONDS_PER_CALL, TSHARK_CALLS (1000), SNGREP_CALLS (500), RUNS (3),
# TMP (/dev/shm). Output: a table on stdout and one machine-readable RESULT line per tool.
# The machine is shared: compare the ratios of one run, not absolute numbers across runs.
set -euo pipefail

BUILD=${1:-build}
RUNS=${RUNS:-3}
SECONDS_PER_CALL=${SECONDS_PER_CALL:-10}
TSHARK_CALLS=${TSHARK_CALLS:-1000}
SNGREP_CALLS=${SNGREP_CALLS:-500}
TMPROOT=${TMP:-/dev/shm}
GEN=$BUILD/tools/callrec-pcapgen
DAEMON=$BUILD/tools/callrecd
for t in "$GEN" "$DAEMON"; do
  [[ -x $t ]] || { echo "span_offline_bench: $t missing (build it: ninja -C $BUILD callrecd callrec-pcapgen)" >&2; exit 2; }
done
for t in tcpdump tshark sngrep /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "span_offline_bench: $t missing (apt-get install -y tcpdump tshark sngrep time)" >&2; exit 2; }
done

NOTE=""
CALLS=${CALLS:-10000}

WORK=$(mktemp -d "$TMPROOT/span-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

gen() {  # gen NAME CALLS -> $WORK/NAME.pcap (+ .calls)
  "$GEN" --calls "$2" --seconds "$SECONDS_PER_CALL" -o "$WORK/$1.pcap" --quiet
}
frames_of() { sed -n '1s/.* frames=\([0-9]*\).*/\1/p' "$WORK/$1.pcap.calls"; }
peak_of() { sed -n '1s/.* peak_concurrent=\([0-9]*\).*/\1/p' "$WORK/$1.pcap.calls"; }

echo "generating: $CALLS calls x ${SECONDS_PER_CALL} s, and $TSHARK_CALLS / $SNGREP_CALLS-call captures of the same shape" >&2
t0=$(now)
gen big "$CALLS"
t1=$(now)
gen small "$TSHARK_CALLS"
gen smaller "$SNGREP_CALLS"
GEN_S=$(printf '%.1f' "$(echo "$t1 - $t0" | bc)")
BIG_FRAMES=$(frames_of big)
BIG_BYTES=$(stat -c %s "$WORK/big.pcap")
echo "  big: $BIG_FRAMES frames, $BIG_BYTES bytes in ${GEN_S} s" >&2

# time_runs LABEL CMD... : RUNS wall times (s), median on stdout
time_runs() {
  local label=$1; shift
  local ts=()
  for ((i = 0; i < RUNS; i++)); do
    local a b
    a=$(now)
    "$@" >/dev/null 2>&1 || { echo "span_offline_bench: $label failed: $*" >&2; exit 1; }
    b=$(now)
    ts+=("$(printf '%.3f' "$(echo "$b - $a" | bc)")")
  done
  echo "  $label: ${ts[*]} s" >&2
  printf '%s\n' "${ts[@]}" | median
}

# callrecd: wall time from the summary line, peak RSS from /usr/bin/time, checks every run.
DAEMON_S=() DAEMON_RSS=()
run_daemon() {  # run_daemon NAME -> sets LAST_S LAST_RSS, checks the summary
  local name=$1 out="$WORK/$1.out" tv="$WORK/$1.time"
  rm -rf "$WORK/rec"
  local a b
  a=$(now)
  /usr/bin/time -v "$DAEMON" --span-read "$WORK/$name.pcap" --storage "$WORK/rec/storage" \
    --catalog "$WORK/rec/catalog.db" --log-level warn >"$out" 2>"$tv" || { cat "$out" "$tv" >&2; exit 1; }
  b=$(now)
  LAST_S=$(printf "%.3f" "$(echo "$b - $a" | bc)")  # the process, like the other tools (its summary times the reading alone)
  LAST_RSS=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$tv")
  local calls
  calls=$(wc -l <"$WORK/$name.pcap.calls")
  calls=$((calls - 2))
  if ! grep -q "calls: $calls followed, $calls answered, $calls recorded ($((2 * calls)) directions with RTP)" "$out" ||
     grep -q "rtp_unattributed\|write_errors" "$out"; then
    echo "span_offline_bench: callrecd did not record every call of $name:" >&2
    cat "$out" >&2
    CHECK="FAILED"
  fi
  SUMMARY=$(cat "$out")
}
CHECK="ok"
echo "callrecd --span-read, $RUNS runs" >&2
for ((i = 0; i < RUNS; i++)); do
  run_daemon big
  DAEMON_S+=("$LAST_S")
  DAEMON_RSS+=("$LAST_RSS")
done
echo "  callrecd: ${DAEMON_S[*]} s, peak RSS ${DAEMON_RSS[*]} KiB" >&2
D_S=$(printf '%s\n' "${DAEMON_S[@]}" | median)
D_RSS=$(printf '%s\n' "${DAEMON_RSS[@]}" | median)
BIG_SUMMARY=$SUMMARY
run_daemon small  # the marginal memory per call, and callrecd at TSHARK_CALLS calls
SMALL_RSS=$LAST_RSS
SMALL_D_S=$LAST_S

TCP_BIG=$(time_runs "tcpdump big" tcpdump -r "$WORK/big.pcap" -w /dev/null)
TSQ_BIG=$(time_runs "tshark -q big" tshark -r "$WORK/big.pcap" -q)
TCP_SMALL=$(time_runs "tcpdump small" tcpdump -r "$WORK/small.pcap" -w /dev/null)
TSR_SMALL=$(time_runs "tshark rtp,streams small" timeout 600 tshark -r "$WORK/small.pcap" -q -z rtp,streams)
TCP_SMALLER=$(time_runs "tcpdump smaller" tcpdump -r "$WORK/smaller.pcap" -w /dev/null)
SNG_SMALLER=$(time_runs "sngrep smaller" timeout 600 sngrep -N -q -I "$WORK/smaller.pcap")
SNG_DIALOGS=$(sngrep -N -I "$WORK/smaller.pcap" 2>/dev/null | tr '\r' '\n' | sed -n 's/Dialog count: //p' | tail -1)

SMALL_FRAMES=$(frames_of small)
SMALLER_FRAMES=$(frames_of smaller)
PEAK=$(peak_of big)
fps() { echo "$1 / $2" | bc -l | xargs printf '%.0f'; }
ratio() { echo "($1 / $2) / ($3 / $4)" | bc -l | xargs printf '%.3f'; }

MACHINE="$(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
PER_CALL=$(echo "$D_RSS / $PEAK" | bc -l | xargs printf '%.1f')
MARGINAL=$(echo "($D_RSS - $SMALL_RSS) / ($PEAK - $(peak_of small))" | bc -l | xargs printf '%.1f')

echo
echo "machine: $MACHINE"
echo "capture: $CALLS calls x ${SECONDS_PER_CALL} s ($PEAK up at the peak), $BIG_FRAMES frames, $BIG_BYTES bytes, generated in ${GEN_S} s"
[[ -n $NOTE ]] && echo "note: $NOTE"
echo "median of $RUNS runs; ratio = frames/s / tcpdump's frames/s on the same capture"
echo
printf '| %-44s | %-24s | %10s | %9s | %12s | %8s |\n' "tool" "capture" "frames" "median s" "frames/s" "/tcpdump"
printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..26})" "-----------:" "----------:" "-------------:" "---------:"
row() { printf '| %-44s | %-24s | %10s | %9s | %12s | %8s |\n' "$1" "$2" "$3" "$4" "$(fps "$3" "$4")" "$(ratio "$3" "$4" "$5" "$6")"; }
row "callrecd --span-read (into record files)" "$CALLS calls" "$BIG_FRAMES" "$D_S" "$BIG_FRAMES" "$TCP_BIG"
row "tcpdump -r F -w /dev/null" "$CALLS calls" "$BIG_FRAMES" "$TCP_BIG" "$BIG_FRAMES" "$TCP_BIG"
row "tshark -r F -q (no dissection)" "$CALLS calls" "$BIG_FRAMES" "$TSQ_BIG" "$BIG_FRAMES" "$TCP_BIG"
row "callrecd --span-read (1 run)" "$TSHARK_CALLS calls" "$SMALL_FRAMES" "$SMALL_D_S" "$SMALL_FRAMES" "$TCP_SMALL"
row "tshark -r F -q -z rtp,streams" "$TSHARK_CALLS calls" "$SMALL_FRAMES" "$TSR_SMALL" "$SMALL_FRAMES" "$TCP_SMALL"
row "tcpdump -r F -w /dev/null" "$TSHARK_CALLS calls" "$SMALL_FRAMES" "$TCP_SMALL" "$SMALL_FRAMES" "$TCP_SMALL"
row "sngrep -N -q -I F ($SNG_DIALOGS dialogs)" "$SNGREP_CALLS calls" "$SMALLER_FRAMES" "$SNG_SMALLER" "$SMALLER_FRAMES" "$TCP_SMALLER"
row "tcpdump -r F -w /dev/null" "$SNGREP_CALLS calls" "$SMALLER_FRAMES" "$TCP_SMALLER" "$SMALLER_FRAMES" "$TCP_SMALLER"
echo
echo "callrecd memory: peak RSS $D_RSS KiB (median) / $PEAK calls at the peak = $PER_CALL KiB per call;"
echo "  marginal ($TSHARK_CALLS -> $CALLS calls): $SMALL_RSS -> $D_RSS KiB = $MARGINAL KiB per call (target <= 40)"
echo "callrecd check (every call recorded both ways, nothing unattributed): $CHECK"
echo "callrecd summary of the last big run:"
sed 's/^/  /' <<<"$BIG_SUMMARY"
echo
echo "rerun: bench/span_offline_bench.sh $BUILD   (CALLS=$CALLS SECONDS_PER_CALL=$SECONDS_PER_CALL TSHARK_CALLS=$TSHARK_CALLS SNGREP_CALLS=$SNGREP_CALLS RUNS=$RUNS)"
echo
printf 'RESULT {"bench":"span_offline","calls":%s,"seconds":%s,"peak_calls":%s,"frames":%s,"bytes":%s,"gen_s":%s,"callrecd_s":%s,"callrecd_fps":%s,"tcpdump_s":%s,"tcpdump_fps":%s,"tshark_q_s":%s,"callrecd_over_tcpdump":%s,"rss_kib":%s,"rss_kib_per_call":%s,"marginal_kib_per_call":%s,"check":"%s"}\n' \
  "$CALLS" "$SECONDS_PER_CALL" "$PEAK" "$BIG_FRAMES" "$BIG_BYTES" "$GEN_S" "$D_S" "$(fps "$BIG_FRAMES" "$D_S")" "$TCP_BIG" \
  "$(fps "$BIG_FRAMES" "$TCP_BIG")" "$TSQ_BIG" "$(ratio "$BIG_FRAMES" "$D_S" "$BIG_FRAMES" "$TCP_BIG")" "$D_RSS" "$PER_CALL" "$MARGINAL" "$CHECK"
printf 'RESULT {"bench":"span_offline","calls":%s,"frames":%s,"callrecd_s":%s,"tshark_rtp_streams_s":%s,"tshark_fps":%s,"tcpdump_s":%s,"tshark_over_tcpdump":%s}\n' \
  "$TSHARK_CALLS" "$SMALL_FRAMES" "$SMALL_D_S" "$TSR_SMALL" "$(fps "$SMALL_FRAMES" "$TSR_SMALL")" "$TCP_SMALL" "$(ratio "$SMALL_FRAMES" "$TSR_SMALL" "$SMALL_FRAMES" "$TCP_SMALL")"
printf 'RESULT {"bench":"span_offline","calls":%s,"frames":%s,"sngrep_s":%s,"sngrep_fps":%s,"sngrep_dialogs":%s,"tcpdump_s":%s,"sngrep_over_tcpdump":%s}\n' \
  "$SNGREP_CALLS" "$SMALLER_FRAMES" "$SNG_SMALLER" "$(fps "$SMALLER_FRAMES" "$SNG_SMALLER")" "${SNG_DIALOGS:-0}" "$TCP_SMALLER" "$(ratio "$SMALLER_FRAMES" "$SNG_SMALLER" "$SMALLER_FRAMES" "$TCP_SMALLER")"
