#!/usr/bin/env bash
# Load benchmark for the gateway core. In one run, against the same local upstream
# (examples/bench_upstream.rs), it measures with wrk:
#   direct  - straight to the upstream
#   bare    - through a bare Pingora pass-through (examples/bare_proxy.rs), the baseline
#   cordon  - through Cordon (auth, body read and parse, DLP scan, the bundled Rego policies,
#             routing, relay, metrics, access log, audit record to SQLite)
# at concurrency 1 and 64, and reports RPS, p50/p99 latency, the latency each proxy adds over
# direct, Cordon's throughput as a ratio of the bare pass-through, the CPU time (user + system)
# and context switches each proxy spends per request, which the noise of a shared machine moves
# less, and Cordon's peak RSS.
#   router/benches/load.sh            (DURATION=10 THREADS=2 ROUNDS=1 to change the run)
# CONCS="1" measures only the concurrencies named (default "1 64"; peak RSS is the issue's figure
# only when 64 is among them).
# ROUNDS=N repeats the whole sequence N times and reports the medians of the per-round ratios,
# added p99 and CPU per request: on a shared machine one round's figures move by +-0.05x.
# PIN=1 puts the proxy under test on the last core and wrk and the upstream on the others
# (taskset), so that tail latency measures the proxy rather than the scheduler. CORDON_LOG
# sets Cordon's log level (default info: one access-log line per request). CORDON_EXTRA is
# appended to Cordon's config (for example $'[audit]\nenabled = false' to measure without it).
# SMAPS=1 also prints Cordon's resident memory at the end by kind (anonymous, file), its
# thread count and its audit counters (how many records were written at idle priority).
# PERF=FILE records Cordon with `perf record -g` during its concurrency-64 run (PERF_ARGS replaces
# -g, e.g. "--call-graph dwarf"; read it with perf report -i FILE). The binaries are built into, and
# run from, CARGO_TARGET_DIR when it is set; CORDON_BIN=PATH measures another cordon binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-1}"
CONCS="${CONCS:-1 64}"
THREADS="${THREADS:-2}"
UP_PORT="${UP_PORT:-18001}"; BARE_PORT="${BARE_PORT:-18002}"; CORDON_PORT="${CORDON_PORT:-18003}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin cordon --example bench_upstream --example bare_proxy
bin="${CARGO_TARGET_DIR:-target}/release"
# CORDON_BIN runs another cordon binary (an older build, say) against the same upstream and bare
# proxy, for an A/B in one session.
cordon_bin="${CORDON_BIN:-$bin/cordon}"
PIN="${PIN:-0}"
last=$(( $(nproc) - 1 ))
# taskset execs the program, so $! stays the program's pid.
proxy_core=(); load_cores=()
if [[ $PIN == 1 && $last -gt 0 ]]; then proxy_core=(taskset -c "$last"); load_cores=(taskset -c "0-$((last - 1))"); fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

"${load_cores[@]}" "$bin/examples/bench_upstream" "127.0.0.1:$UP_PORT" 2>/dev/null & pids+=($!)
"${proxy_core[@]}" "$bin/examples/bare_proxy" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT" "$THREADS" 2>/dev/null & bare_pid=$!; pids+=($bare_pid)
cat > "$work/cordon.toml" <<TOML
[server]
http_listen = "127.0.0.1:$CORDON_PORT"
threads = $THREADS
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 0
[data]
dir = "$work"
[dlp]
rules_dir = "$PWD/dlp-rules"
[policy]
dir = "$PWD/policies"
[providers.bench]
type = "openai"
base_url = "http://127.0.0.1:$UP_PORT/v1"
[[models]]
name = "bench"
provider = "bench"
${CORDON_EXTRA:-}
TOML
key=$("$cordon_bin" keys create --config "$work/cordon.toml" --name bench --json | sed 's/.*"key":"\([^"]*\)".*/\1/')
CORDON_LOG="${CORDON_LOG:-info}" "${proxy_core[@]}" "$cordon_bin" serve --config "$work/cordon.toml" 2>"$work/cordon.log" & cordon_pid=$!; pids+=($cordon_pid)
wait_port "$UP_PORT"; wait_port "$BARE_PORT"; wait_port "$CORDON_PORT"
start_kb=$(awk '/VmRSS/ {print $2}' "/proc/$cordon_pid/status")

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
wrk.body = '{"model":"bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":16}'
LUA

# "123.45us" / "1.20ms" / "2.00s" -> microseconds
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'; }

# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
# Context switches (voluntary and not) of all a process's threads so far.
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }'; }
# The median of its arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A rps p50 p99 cpu_us sw
rows=()
for round in $(seq 1 "$ROUNDS"); do
  for conc in $CONCS; do
    t=$(( conc < 2 ? 1 : 2 ))
    for target in direct bare cordon; do
      case $target in direct) port=$UP_PORT ;; bare) port=$BARE_PORT ;; cordon) port=$CORDON_PORT ;; esac
      case $target in bare) pid=$bare_pid ;; cordon) pid=$cordon_pid ;; *) pid= ;; esac
      [[ -n $pid ]] && cpu0=$(cpu_s "$pid") && sw0=$(ctxsw "$pid")
      perf_pid=
      if [[ -n ${PERF:-} && $target == cordon && $conc == 64 && $round == 1 ]]; then
        perf record ${PERF_ARGS:--g} -F 999 -o "$PERF" -p "$cordon_pid" -- sleep "$DURATION" 2>/dev/null & perf_pid=$!
      fi
      out=$("${load_cores[@]}" wrk -t"$t" -c"$conc" -d"${DURATION}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/chat/completions")
      [[ -n $perf_pid ]] && wait "$perf_pid"
      if echo "$out" | grep -q "Non-2xx"; then echo "$target answered errors:"; echo "$out"; exit 1; fi
      k=$target,$conc,$round
      rps[$k]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      p50[$k]=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
      p99[$k]=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
      if [[ -n $pid ]]; then
        requests=$(echo "$out" | awk '/requests in/ {print $1}')
        cpu_us[$k]=$(awk -v a="$cpu0" -v b="$(cpu_s "$pid")" -v n="$requests" 'BEGIN {printf "%.0f", (b - a) * 1e6 / n}')
        sw[$k]=$(awk -v a="$sw0" -v b="$(ctxsw "$pid")" -v n="$requests" 'BEGIN {printf "%.2f", (b - a) / n}')
      fi
    done
  done
done
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$cordon_pid/status")

echo
echo "load benchmark: ${DURATION}s per run, $ROUNDS round(s), wrk, proxies on $THREADS threads, $(nproc) cores, pinned: $PIN"
printf '%-6s %-8s %5s %12s %10s %10s %14s %14s\n' round target conc rps p50_us p99_us added_p50_us added_p99_us
for round in $(seq 1 "$ROUNDS"); do
  for conc in $CONCS; do
    for target in direct bare cordon; do
      k=$target,$conc,$round; d=direct,$conc,$round
      a50=$(awk -v a="${p50[$k]}" -v b="${p50[$d]}" 'BEGIN {printf "%.0f", a - b}')
      a99=$(awk -v a="${p99[$k]}" -v b="${p99[$d]}" 'BEGIN {printf "%.0f", a - b}')
      printf '%-6s %-8s %5s %12s %10.0f %10.0f %14s %14s\n' "$round" "$target" "$conc" "${rps[$k]}" "${p50[$k]}" "${p99[$k]}" "$a50" "$a99"
    done
  done
done
echo "medians over the rounds (each round runs direct, bare and cordon back to back):"
for conc in $CONCS; do
  ratios=(); added=(); bare_added=(); cpu_c=(); cpu_b=(); sw_c=(); sw_b=()
  for round in $(seq 1 "$ROUNDS"); do
    k=$conc,$round
    ratios+=("$(awk -v c="${rps[cordon,$k]}" -v b="${rps[bare,$k]}" 'BEGIN {printf "%.3f", c / b}')")
    added+=("$(awk -v a="${p99[cordon,$k]}" -v b="${p99[direct,$k]}" 'BEGIN {printf "%.0f", a - b}')")
    bare_added+=("$(awk -v a="${p99[bare,$k]}" -v b="${p99[direct,$k]}" 'BEGIN {printf "%.0f", a - b}')")
    cpu_c+=("${cpu_us[cordon,$k]}"); cpu_b+=("${cpu_us[bare,$k]}")
    sw_c+=("${sw[cordon,$k]}"); sw_b+=("${sw[bare,$k]}")
  done
  printf 'concurrency %s: cordon / bare throughput %.2fx (rounds: %s); added p99 cordon %s us, bare %s us; CPU per request cordon %s us, bare %s us; context switches per request cordon %s, bare %s\n' \
    "$conc" "$(median "${ratios[@]}")" "${ratios[*]}" "$(median "${added[@]}")" "$(median "${bare_added[@]}")" "$(median "${cpu_c[@]}")" "$(median "${cpu_b[@]}")" "$(median "${sw_c[@]}")" "$(median "${sw_b[@]}")"
done
echo "cordon peak RSS: $((peak_kb / 1024)) MiB (VmHWM, after the concurrency-64 runs; $((start_kb / 1024)) MiB once started)"
if [[ -n ${SMAPS:-} ]]; then
  echo "cordon memory at the end (smaps_rollup), threads, and audit counters:"
  grep -E "^(Rss|Pss_Anon|Pss_File)" "/proc/$cordon_pid/smaps_rollup" || true
  grep "^Threads" "/proc/$cordon_pid/status" || true
  curl -s "http://127.0.0.1:$CORDON_PORT/metrics" | grep "^cordon_audit" || true
fi
