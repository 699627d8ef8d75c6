#!/usr/bin/env bash
# siprec_bench.sh: the SIPREC recording server through the kernel path, end to end, on this
# machine, the SRC load generator included (callrec-phone --siprec).
#
# Per step N (concurrent SIPREC sessions, 2 RTP streams each, 20 ms G.711):
#   - a fresh callrecd on tmpfs (--siprec-listen on UDP, kernel UDP source, one socket per
#     stream), callrec-phone --siprec --calls N ramping at RATE sessions/s, each session
#     RAMP + STEP_SECONDS long, so all N are up together for about STEP_SECONDS;
#   - sessions established, RTP packets sent (phone report) vs recorded (catalog: received of
#     every siprec row) -> loss; setup latency INVITE->200 p50/p99; daemon CPU over a window
#     with all N up; daemon RSS idle and with N up -> KiB per session; descriptors;
#   - side by side, the same number of streams (2N) as plain uploads (callrec-phone --server,
#     2N/10 phones x 10 concurrent calls, as bench/upload_bench does) on a fresh daemon: what the
#     SIPREC signalling and its two-stream sessions cost against the upload protocol.
# Then the setup rate: SETUP_N sessions offered at once (--rate 0), INVITE->200 per second and
# latency; and with SETUP_N sessions up and streaming, a second SRC churning short sessions
# (--duration 0: INVITE, 200, ACK, BYE) -> sessions set up per second beside them.
#
# Environment: BUILD (build dir with tools/, default ../build-phone or ../build), STEPS
# (default 500,1000,2000,2500,3000,4000,5000), STEP_SECONDS (20), RATE (500), SETUP_N (2500),
# DIR (/dev/shm), NICE (-10: the bench runs in its own session/autogroup ahead of other work;
# needs root), UPLOAD (1: also run the upload comparison), SETUP (1: run the setup-rate part).
# Prints one table row per step, `RESULT {json}` lines, and the command to rerun.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${SIPREC_BENCH_SESSION:-}" ] && command -v setsid >/dev/null; then
  # Its own session, so that sched_autogroup gives it its own share and NICE applies to it.
  SIPREC_BENCH_SESSION=1 exec setsid -w "$0" "$@"
fi
if [ -z "${BUILD:-}" ]; then
  if [ -x "$ROOT/build-phone/tools/callrecd" ]; then BUILD=$ROOT/build-phone; else BUILD=$ROOT/build; fi
fi
CALLRECD=$BUILD/tools/callrecd
PHONE=$BUILD/tools/callrec-phone
STEPS=${STEPS:-500,1000,2000,2500,3000,4000,5000}
STEP_SECONDS=${STEP_SECONDS:-20}
RATE=${RATE:-500}
SETUP_N=${SETUP_N:-2500}
DIR=${DIR:-/dev/shm}
NICE=${NICE:--10}
UPLOAD=${UPLOAD:-1}
SETUP=${SETUP:-1}
RTP_PORTS=10000-30999
for b in "$CALLRECD" "$PHONE"; do [ -x "$b" ] || { echo "missing $b (build callrecd and callrec-phone)" >&2; exit 1; }; done
for t in jq sqlite3; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done
if [ "$(id -u)" = 0 ] && [ "$NICE" != 0 ]; then
  echo "$NICE" > /proc/self/autogroup 2>/dev/null || true
  renice -n "$NICE" -p $$ >/dev/null 2>&1 || true
fi
ulimit -n "$(ulimit -Hn)"

echo "== siprec_bench: $(date -u +%FT%TZ), HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "   machine: nproc $(nproc), $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "   RLIMIT_NOFILE $(ulimit -n) (hard $(ulimit -Hn)); storage and catalog on $DIR ($(stat -f -c %T "$DIR"))"
echo "   steps $STEPS, ${STEP_SECONDS} s with all sessions up, ramp $RATE sessions/s, binaries in $BUILD"

DPID=; PPID_=; BURST=
cleanup() {
  for p in "$PPID_" "$BURST" "$DPID"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local p
  while :; do
    p=$((61000 + RANDOM % 4500))
    if ! ss -Hlnu "sport = :$p" | grep -q . && ! ss -Hlnt "sport = :$p" | grep -q .; then echo $p; return; fi
  done
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
metric() { curl -s --max-time 15 "http://127.0.0.1:$1/metrics" | awk -v k="$2" '$1 == k {print $2; exit}'; }
HZ=$(getconf CLK_TCK)

# start_daemon DIR [flags...]: sets DPID, MPORT, CPORT
start_daemon() {
  local d=$1; shift
  MPORT=$(free_port)
  "$CALLRECD" --listen 127.0.0.1:0 --metrics 127.0.0.1:$MPORT --storage "$d/rec" --catalog "$d/catalog.db" \
    --rtp-ports $RTP_PORTS --rtp-all-ports --port-quarantine 1 "$@" > "$d/daemon.out" 2> "$d/daemon.log" &
  DPID=$!
  for _ in $(seq 200); do grep -q "ready:" "$d/daemon.log" && break; sleep 0.05; done
  grep -q "ready:" "$d/daemon.log" || { echo "daemon did not start:"; cat "$d/daemon.log"; exit 1; }
  CPORT=$(grep -o 'control=[^ ]*' "$d/daemon.log" | head -1 | sed 's/.*://')
}
stop_daemon() {
  kill -TERM "$DPID" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$DPID" 2>/dev/null || true
  wait "$DPID" 2>/dev/null || true
}
# thread_ticks: "control rx writer other" CPU ticks of the daemon's threads (by thread name)
thread_ticks() {
  local t comm ticks c=0 r=0 w=0 o=0
  for t in /proc/$DPID/task/*; do
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    ticks=$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null) || continue
    case "$comm" in
      callrec-rx*) r=$((r + ticks)) ;;
      callrec-wr*) w=$((w + ticks)) ;;
      *) if [ "${t##*/}" = "$DPID" ]; then c=$((c + ticks)); else o=$((o + ticks)); fi ;;
    esac
  done
  echo "$c $r $w $o"
}
# measure_window SECONDS: daemon CPU % of one core over the window (total, and control/rx/writer
# threads), RSS and fds at its end
measure_window() {
  local c0 c1 t0 t1 th0 th1 p0 p1
  c0=$(cpu_ticks $DPID); th0=$(thread_ticks); p0=$(metric $MPORT callrec_rx_packets_total); t0=$(date +%s.%N)
  sleep "$1"
  c1=$(cpu_ticks $DPID); th1=$(thread_ticks); p1=$(metric $MPORT callrec_rx_packets_total); t1=$(date +%s.%N)
  WIN_PPS=$(awk -v a="${p0:-0}" -v b="${p1:-0}" -v s="$t0" -v e="$t1" 'BEGIN {printf "%.0f", (b - a) / (e - s)}')
  WIN_CPU=$(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" -v hz="$HZ" 'BEGIN {printf "%.1f", 100 * (b - a) / hz / (e - s)}')
  WIN_THREADS=$(awk -v a="$th0" -v b="$th1" -v s="$t0" -v e="$t1" -v hz="$HZ" 'BEGIN {
    split(a, x, " "); split(b, y, " "); d = (e - s) * hz
    printf "%.0f/%.0f/%.0f", 100 * (y[1] - x[1]) / d, 100 * (y[2] - x[2]) / d, 100 * (y[3] - x[3]) / d }')
  WIN_RSS=$(rss_kib $DPID)
  WIN_FDS=$(fd_count $DPID)
}
udp_rcvbuf_errors() { awk '/^Udp:/ {n++; if (n == 1) {for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i} else {print $c; exit}}' /proc/net/snmp; }
# drops_since RCVBUF0: "sockbuf/ring_full/unknown_flow+wrong_source/unanswered" after a run (daemon still up)
drops_since() {
  local m rb
  m=$(curl -s --max-time 15 "http://127.0.0.1:$MPORT/metrics")
  rb=$(( $(udp_rcvbuf_errors) - $1 ))
  awk -v rb="$rb" '$1 == "callrec_rx_dropped_total{cause=\"ring_full\"}" {r = $2}
    $1 == "callrec_rx_dropped_total{cause=\"unknown_flow\"}" {u = $2}
    $1 == "callrec_rx_dropped_total{cause=\"wrong_source\"}" {w = $2}
    END {printf "%d/%d/%d", rb, r, u + w}' <<< "$m"
}
control_cpu_s() { awk -v hz="$HZ" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$DPID/task/$DPID/stat" 2>/dev/null || echo 0; }

echo
echo "siprec: sessions established, RTP packets sent (phone) and recorded (catalog), setup INVITE->200, daemon CPU"
echo "in % of one core over the window with all sessions up (total, and control/rx/writer threads), control"
echo "thread CPU seconds over the whole run (signalling), RSS per session above idle, daemon descriptors."
echo "rx pps: daemon receive rate in the window (target 100 per session); late: % of the phone's sends more than"
echo "5 ms late, and the latest (s): the generator's own limit. drops: kernel socket buffer / ring_full / no flow."
echo "upload: the same number of streams as uploads on a fresh daemon; last column: daemon CPU siprec / upload."
printf '%-5s | %-9s %-9s %-9s %-6s %-14s %-7s %-9s %-5s %-9s %-5s %-8s %-6s %-5s | %-6s %-9s %-9s %-6s %-10s %-7s %-5s %-9s %-6s %-5s | %s\n' \
  "N" "estab" "sent" "recorded" "loss" "setup p50/p99" "rx pps" "late%/max" "cpu%" "c/rx/wr%" "ctl_s" "drops" "KiB/s" "fds" \
  "streams" "up_sent" "up_rec" "loss" "drops" "rx pps" "cpu%" "c/rx/wr%" "ctl_s" "KiB" "ratio"
RESULTS=()
IFS=, read -r -a STEP_LIST <<< "$STEPS"
for N in "${STEP_LIST[@]}"; do
  RAMP_S=$(awk -v n="$N" -v r="$RATE" 'BEGIN {printf "%.1f", n / r}')
  DUR=$(awk -v a="$RAMP_S" -v b="$STEP_SECONDS" 'BEGIN {printf "%.0f", a + b + 2}')
  THREADS=1; [ "$N" -gt 2000 ] && THREADS=2
  # ---- SIPREC ----
  D=$(mktemp -d "$DIR/siprec-bench.XXXXXX")
  SPORT=$(free_port)
  start_daemon "$D" --siprec-listen 127.0.0.1:$SPORT
  sleep 1
  RSS0=$(rss_kib $DPID)
  RB0=$(udp_rcvbuf_errors)
  "$PHONE" --siprec 127.0.0.1:$SPORT --calls "$N" --duration "$DUR" --rate "$RATE" --threads "$THREADS" \
    --udp-sockets 4 --timeout 30 --json --report-interval 0 > "$D/phone.json" 2> "$D/phone.err" &
  PPID_=$!
  T_START=$(date +%s.%N)
  # Wait until every session is up (or the ramp + 10 s), then measure with all of them up.
  for _ in $(seq 400); do
    up=$(metric $MPORT callrec_siprec_sessions); up=${up:-0}
    [ "${up%.*}" -ge "$N" ] && break
    awk -v s="$T_START" -v r="$RAMP_S" -v now="$(date +%s.%N)" 'BEGIN {exit !(now - s > r + 10)}' && break
    sleep 0.1
  done
  UP=$(metric $MPORT callrec_siprec_sessions)
  WINDOW=$(awk -v s="$STEP_SECONDS" 'BEGIN {w = s - 6; if (w < 4) w = 4; print w}')
  measure_window "$WINDOW"
  S_CPU=$WIN_CPU; S_RSS=$WIN_RSS; S_FDS=$WIN_FDS; S_TH=$WIN_THREADS; S_PPS=$WIN_PPS
  wait $PPID_ || true
  S_CTL=$(control_cpu_s)
  REFUSED=$(metric $MPORT callrec_siprec_refused_busy_total)
  S_DROPS=$(drops_since "$RB0")
  stop_daemon
  J=$(tail -1 "$D/phone.json")
  EST=$(jq .established <<< "$J"); SENT=$(jq .rtp.packets_sent <<< "$J")
  P50=$(jq .setup_latency_ms.p50 <<< "$J"); P99=$(jq .setup_latency_ms.p99 <<< "$J")
  FAILS=$(jq -c .failed_by_reason <<< "$J"); LATE=$(jq .rtp.late_sends <<< "$J"); MAXLATE=$(jq .rtp.max_late_ms <<< "$J")
  PCPU=$(jq '(.cpu_user_s + .cpu_sys_s) * 100 | round / 100' <<< "$J"); PEL=$(jq .elapsed_s <<< "$J")
  RECORDED=$(sqlite3 "$D/catalog.db" "select coalesce(sum(received - duplicate - late), 0) from recordings where source = 'siprec'")
  ROWS=$(sqlite3 "$D/catalog.db" "select count(*) from recordings where source = 'siprec'")
  STREAMS2=$(sqlite3 "$D/catalog.db" "select count(*) from (select recording_id from streams s join recordings r on r.id = s.recording_id where r.source = 'siprec' and s.packets > 0 group by recording_id having count(*) = 2)")
  LOSS=$((SENT - RECORDED))
  LATE_PCT=$(awk -v l="$LATE" -v s="$SENT" 'BEGIN {if (s > 0) printf "%.0f", 100 * l / s; else print 0}')
  MAXLATE_S=$(awk -v m="$MAXLATE" 'BEGIN {printf "%.2f", m / 1000}')
  KIB=$(awk -v a="$RSS0" -v b="$S_RSS" -v n="$N" 'BEGIN {printf "%.1f", (b - a) / n}')
  rm -rf "$D"
  # ---- uploads, same number of streams ----
  U_SENT=-; U_REC=-; U_LOSS=-; U_CPU=-; U_CTL=-; U_KIB=-; RATIO=-; U_TH=-; U_PPS=-; U_DROPS=-
  STREAMS=$((2 * N))
  if [ "$UPLOAD" = 1 ]; then
    D=$(mktemp -d "$DIR/siprec-bench-up.XXXXXX")
    start_daemon "$D" --max-connections-per-address 0 --max-recordings-per-address 0 --max-connections 20000
    sleep 1
    URSS0=$(rss_kib $DPID)
    RB0=$(udp_rcvbuf_errors)
    PHONES=$(( (STREAMS + 9) / 10 ))
    "$PHONE" --server 127.0.0.1:$CPORT --phones "$PHONES" --concurrent-per-phone 10 --calls-per-phone 10 \
      --duration "$DUR" --ramp $((2 * RATE)) --threads "$THREADS" --udp-sockets 4 --timeout 30 --seed 1 \
      --json --report-interval 0 > "$D/phone.json" 2> "$D/phone.err" &
    PPID_=$!
    T_START=$(date +%s.%N)
    for _ in $(seq 400); do
      up=$(metric $MPORT callrec_recordings_active); up=${up:-0}
      [ "${up%.*}" -ge "$STREAMS" ] && break
      awk -v s="$T_START" -v r="$RAMP_S" -v now="$(date +%s.%N)" 'BEGIN {exit !(now - s > r + 10)}' && break
      sleep 0.1
    done
    measure_window "$WINDOW"
    U_CPU=$WIN_CPU; U_RSS=$WIN_RSS; U_TH=$WIN_THREADS; U_PPS=$WIN_PPS
    wait $PPID_ || true
    U_CTL=$(control_cpu_s)
    U_DROPS=$(drops_since "$RB0")
    stop_daemon
    UJ=$(tail -1 "$D/phone.json")
    U_SENT=$(jq .rtp.packets_sent <<< "$UJ")
    U_REC=$(sqlite3 "$D/catalog.db" "select coalesce(sum(received - duplicate - late), 0) from recordings where source = 'upload'")
    U_LOSS=$((U_SENT - U_REC))
    U_KIB=$(awk -v a="$URSS0" -v b="$U_RSS" -v n="$STREAMS" 'BEGIN {printf "%.1f", (b - a) / n}')
    RATIO=$(awk -v a="$S_CPU" -v b="$U_CPU" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')
    rm -rf "$D"
  fi
  printf '%-5s | %-9s %-9s %-9s %-6s %-14s %-7s %-9s %-5s %-9s %-5s %-8s %-6s %-5s | %-6s %-9s %-9s %-6s %-10s %-7s %-5s %-9s %-6s %-5s | %s\n' \
    "$N" "$EST/$N" "$SENT" "$RECORDED" "$LOSS" "$P50/$P99" "$S_PPS" "$LATE_PCT/$MAXLATE_S" "$S_CPU" "$S_TH" "$S_CTL" "$S_DROPS" "$KIB" "$S_FDS" \
    "$STREAMS" "$U_SENT" "$U_REC" "$U_LOSS" "$U_DROPS" "$U_PPS" "$U_CPU" "$U_TH" "$U_CTL" "$U_KIB" "$RATIO"
  if [ "$FAILS" != "{}" ] || [ "$ROWS" != "$EST" ] || [ "$STREAMS2" != "$EST" ]; then
    echo "       N=$N: failed $FAILS, daemon 503s ${REFUSED:-0}, catalog rows $ROWS (with both streams recorded: $STREAMS2), sessions up at the window $UP"
  fi
  R="{\"part\":\"siprec\",\"sessions\":$N,\"established\":$EST,\"failed\":$FAILS,\"sent\":$SENT,\"recorded\":$RECORDED,\"loss\":$LOSS,\"setup_p50_ms\":$P50,\"setup_p99_ms\":$P99,\"rx_pps\":$S_PPS,\"drops_sockbuf_ring_noflow\":\"$S_DROPS\",\"daemon_cpu_pct\":$S_CPU,\"threads_pct\":\"$S_TH\",\"control_cpu_s\":$S_CTL,\"rss_idle_kib\":$RSS0,\"rss_kib\":$S_RSS,\"kib_per_session\":$KIB,\"fds\":$S_FDS,\"phone_cpu_s\":$PCPU,\"phone_elapsed_s\":$PEL,\"late_sends\":$LATE,\"max_late_ms\":$MAXLATE,\"upload\":{\"streams\":$STREAMS,\"sent\":\"$U_SENT\",\"recorded\":\"$U_REC\",\"loss\":\"$U_LOSS\",\"rx_pps\":\"$U_PPS\",\"drops_sockbuf_ring_noflow\":\"$U_DROPS\",\"daemon_cpu_pct\":\"$U_CPU\",\"threads_pct\":\"$U_TH\",\"control_cpu_s\":\"$U_CTL\",\"kib_per_stream\":\"$U_KIB\"}}"
  RESULTS+=("$R")
done

if [ "$SETUP" = 1 ]; then
  echo
  echo "== setup rate: $SETUP_N sessions offered at once (--rate 0), then short sessions beside $SETUP_N up"
  D=$(mktemp -d "$DIR/siprec-bench-setup.XXXXXX")
  SPORT=$(free_port)
  start_daemon "$D" --siprec-listen 127.0.0.1:$SPORT
  THREADS=1; [ "$SETUP_N" -gt 2000 ] && THREADS=2
  "$PHONE" --siprec 127.0.0.1:$SPORT --calls "$SETUP_N" --duration 40 --rate 0 --threads "$THREADS" --udp-sockets 4 \
    --timeout 30 --json --report-interval 0 > "$D/burst.json" 2> "$D/burst.err" &
  BURST=$!
  for _ in $(seq 600); do
    up=$(metric $MPORT callrec_siprec_sessions); up=${up:-0}
    [ "${up%.*}" -ge "$SETUP_N" ] && break
    sleep 0.1
  done
  sleep 2
  CH_SLOTS=100
  C0=$(control_cpu_s)
  "$PHONE" --siprec 127.0.0.1:$SPORT --calls $CH_SLOTS --repeat 30 --duration 0 --rate 0 --udp-sockets 4 \
    --timeout 30 --json --report-interval 0 > "$D/churn.json" 2> "$D/churn.err" || true
  C1=$(control_cpu_s)
  wait $BURST || true
  stop_daemon
  BJ=$(tail -1 "$D/burst.json"); CJ=$(tail -1 "$D/churn.json")
  printf '%-34s | %-9s %-10s %-16s %-16s %s\n' "" "sessions" "setup/s" "setup p50/p99 ms" "bye p50/p99 ms" "failed"
  printf '%-34s | %-9s %-10s %-16s %-16s %s\n' "burst of $SETUP_N, --rate 0" "$(jq .established <<< "$BJ")" \
    "$(jq .setup_rate_per_s <<< "$BJ")" "$(jq .setup_latency_ms.p50 <<< "$BJ")/$(jq .setup_latency_ms.p99 <<< "$BJ")" \
    "$(jq .bye_latency_ms.p50 <<< "$BJ")/$(jq .bye_latency_ms.p99 <<< "$BJ")" "$(jq -c .failed_by_reason <<< "$BJ")"
  printf '%-34s | %-9s %-10s %-16s %-16s %s\n' "churn ($CH_SLOTS slots) beside $SETUP_N up" "$(jq .established <<< "$CJ")" \
    "$(jq .setup_rate_per_s <<< "$CJ")" "$(jq .setup_latency_ms.p50 <<< "$CJ")/$(jq .setup_latency_ms.p99 <<< "$CJ")" \
    "$(jq .bye_latency_ms.p50 <<< "$CJ")/$(jq .bye_latency_ms.p99 <<< "$CJ")" "$(jq -c .failed_by_reason <<< "$CJ")"
  echo "   daemon control thread during the churn: $(awk -v a="$C0" -v b="$C1" 'BEGIN {printf "%.2f", b - a}') s CPU for $(jq .established <<< "$CJ") sessions; churn elapsed $(jq .elapsed_s <<< "$CJ") s"
  RESULTS+=("{\"part\":\"setup\",\"burst\":$BJ,\"churn\":$CJ}")
  rm -rf "$D"
fi

echo
for r in "${RESULTS[@]}"; do echo "RESULT $r"; done
echo
echo "rerun: STEPS=$STEPS STEP_SECONDS=$STEP_SECONDS RATE=$RATE SETUP_N=$SETUP_N DIR=$DIR NICE=$NICE BUILD=$BUILD $ROOT/bench/siprec_bench.sh"
