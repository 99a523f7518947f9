#!/usr/bin/env bash
# Runs the README's mosquitto_pub / mosquitto_sub walk-through, then its
# curl commands, then its backup, restore, export and import commands, as
# written except for the ports (free loopback ports instead of 1883 and
# 8080, a second local broker for other-host), against a real `shade serve`,
# and checks what the README says they print or make.
# Usage: tests/scripts/readme_walkthrough.sh [path/to/shade]
set -euo pipefail
cd "$(dirname "$0")/../.."
SHADE=${1:-target/debug/shade}
command -v mosquitto_pub >/dev/null || { echo "mosquitto-clients is not installed (apt-get install mosquitto-clients)"; exit 1; }
[ -x "$SHADE" ] || { echo "no $SHADE: run cargo build first"; exit 1; }
SHADE=$(cd "$(dirname "$SHADE")" && pwd)/$(basename "$SHADE")

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
hport=$(free_port)
pids=()
# TERM first: `timeout` passes it on to the client it runs (a KILL would
# leave that client running, orphaned).
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 30); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$SHADE" serve --listen "127.0.0.1:$port" --http "127.0.0.1:$hport" --data "$work/data" 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# The README's commands, in order, with the port swapped.
mapfile -t cmds < <(grep -E '^(mosquitto_(pub|sub)|  -m )' README.md | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' \
  | awk '/^mosquitto/ {print}' | sed "s/-p 1883/-p $port/")
sub_first=${cmds[0]}
[[ $sub_first == mosquitto_sub* ]] || { echo "README walk-through should start with mosquitto_sub"; exit 1; }
timeout 6 bash -c "exec $sub_first" >"$work/sub.out" 2>&1 &
pids+=($!)
sleep 0.5
state_sub=""
for c in "${cmds[@]:1}"; do
  if [[ $c == mosquitto_sub* ]]; then state_sub=$c; continue; fi
  echo "+ $c"
  bash -c "$c"
  sleep 0.2
done
[ -n "$state_sub" ] && timeout 2 bash -c "$state_sub" >"$work/state.out" 2>&1 || true
sleep 0.5
fail=0
for want in 'shadow/update/accepted {' 'shadow/update/documents {' 'shadow/update/delta {' 'shadow/get/accepted {' '"clientToken":"t1"'; do
  grep -qF "$want" "$work/sub.out" || { echo "missing in the first shell: $want"; fail=1; }
done
grep -qF 'shade/things/lamp/state {' "$work/state.out" || { echo "missing retained state on shade/things/#"; fail=1; }
if [ $fail -ne 0 ]; then
  echo "--- first shell"; cat "$work/sub.out"; echo "--- state"; cat "$work/state.out" || true
  echo "--- serve log"; tail -20 "$work/serve.log"; exit 1
fi

# The curl commands, in order, with the HTTP port swapped; a streaming one
# (-N) for two seconds.
mapfile -t curls < <(awk '/^#/ {skip = ($0 ~ /^### Backup, restore, export/)} !skip' README.md | grep -E '^(curl |  -d )'  | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' \
  | awk '/^curl/ {print}' | sed "s/127.0.0.1:8080/127.0.0.1:$hport/")
[ ${#curls[@]} -ge 5 ] || { echo "README should show five curl commands, found ${#curls[@]}"; exit 1; }
: >"$work/curl.out"
for c in "${curls[@]}"; do
  [[ $c == *" -N "* ]] && c="${c/curl /curl --max-time 2 }"
  echo "+ $c"
  { bash -c "$c" || true; echo; } >>"$work/curl.out"
done
for want in '"state":{"desired":{"color":"red"}}' '"delta":{"color":"red"}' '"thing":"lamp","version":3' '"kind":"update"' 'data: {"shadow":null,"thing":"lamp"'; do
  grep -qF "$want" "$work/curl.out" || { echo "missing in curl's output: $want"; fail=1; }
done
if [ $fail -ne 0 ]; then
  echo "--- curl"; cat "$work/curl.out"; echo "--- serve log"; tail -20 "$work/serve.log"; exit 1
fi
# The backup, restore, export and import commands, as written, in the
# work directory: `shade` is the binary under test, 1883 this broker's port,
# other-host a second, empty broker.
port2=$(free_port)
"$SHADE" serve --listen "127.0.0.1:$port2" --http off --data "$work/other" 2>"$work/other.log" &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port2") 2>/dev/null && break
  sleep 0.1
done
mapfile -t backups < <(awk '/^#/ {keep = ($0 ~ /^### Backup, restore, export/)} keep' README.md | grep -E '^(shade|curl) ' \
  | sed -e "s#mqtt://127.0.0.1:1883#mqtt://127.0.0.1:$port#" -e "s#mqtt://other-host:1883#mqtt://127.0.0.1:$port2#" \
    -e "s#127.0.0.1:8080#127.0.0.1:$hport#")
[ ${#backups[@]} -eq 5 ] || { echo "README should show five backup commands, found ${#backups[@]}"; exit 1; }
for c in "${backups[@]}"; do
  echo "+ $c"
  [[ $c == shade* ]] && c="\"$SHADE\" ${c#shade }"
  (cd "$work" && bash -c "$c") >>"$work/backup.out" 2>&1 || { echo "failed: $c"; cat "$work/backup.out"; exit 1; }
done
[ -s "$work/shade.backup" ] && [ -f "$work/restored/shade.redb" ] || { echo "no backup or restored data"; exit 1; }
# The one over HTTP is a backup too: restore verifies it.
"$SHADE" restore "$work/shade2.backup" --data "$work/restored2" >>"$work/backup.out" 2>&1 \
  || { echo "the HTTP backup does not restore"; cat "$work/backup.out"; exit 1; }
grep -qF '"thing":"lamp"' "$work/fleet.json" || { echo "lamp missing in the export"; cat "$work/fleet.json"; exit 1; }
"$SHADE" get lamp --broker "mqtt://127.0.0.1:$port2" >"$work/other.out" 2>&1 || true
grep -qE '"color": ?"red"' "$work/other.out" || { echo "lamp missing on the broker the export was imported into"; cat "$work/other.out"; exit 1; }
"$SHADE" get lamp --data "$work/restored" >"$work/restored.out" 2>&1 || true
grep -qE '"color": ?"red"' "$work/restored.out" || { echo "lamp missing in the restored data"; cat "$work/restored.out"; exit 1; }
echo "README walk-through works as written"
