#!/usr/bin/env bash
# scripts/loop.sh --rounds N --samples N [autotrain-menu --start options...]
#
# The spec's loop: start a run (and the supervisor if none runs) and follow it to its end, as
# `autotrain-menu --start --rounds N --samples N --wait` does, with the same exit codes (0 only if the run
# completed). Ctrl+C asks the supervisor to stop the run at its next stage boundary and follows it there
# (a second Ctrl+C stops only the following; `autotrain-menu --stop` / `--status` still reach the run).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MENU="$ROOT/.venv/bin/autotrain-menu"
[ -x "$MENU" ] || MENU="$(command -v autotrain-menu || true)"
if [ -z "$MENU" ]; then
    echo "scripts/loop.sh: autotrain-menu is not installed; run \`make install\` first" >&2
    exit 1
fi
case "${1:-}" in
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

# The home (or bus file) the run is started on is the one Ctrl+C must stop it on.
where=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --home|--bus) where+=("${args[i]}" "${args[i + 1]:-}") ;;
        --home=*|--bus=*) where+=("${args[i]}") ;;
    esac
done

stopping=0
on_interrupt() {
    if [ "$stopping" = 1 ]; then exit 130; fi
    stopping=1
    echo "scripts/loop.sh: Ctrl+C: stopping the run at its next stage boundary (Ctrl+C again stops following)" >&2
    "$MENU" "${where[@]}" --stop >&2 || true
}
trap on_interrupt INT

# Started and followed in its own process group: Ctrl+C reaches this script only, which asks for the stop
# and keeps following until the run has stopped.
set -m
"$MENU" --start "$@" --wait &
follower=$!
while true; do
    wait "$follower"
    rc=$?
    # wait returns early (>128) when a trapped signal arrives; the follower is still there.
    if kill -0 "$follower" 2>/dev/null; then continue; fi
    exit "$rc"
done
