# shellcheck shell=bash
# Helpers of the Debian VM scenario (sourced by scenario.sh; bash).
# Installed by make-disk.sh as /usr/local/lib/nodeprep-test/lib.sh.
#
# A scenario defines one shell function per step and runs it with
#     run_step NAME FUNCTION
# which prints exactly one marker line on the serial console:
#     NODEPREP-STEP NAME PASS
#     NODEPREP-STEP NAME FAIL <why>
# followed, on failure, by the transcript of every command the step ran
# (each line prefixed with "  | "). The step function runs in a subshell
# with `set -e`, so any failing command or expectation ends it; expectations
# record a reason with `why` before failing.
# Observations that are not pass/fail (what Debian's systemd and dnsmasq did)
# are printed as "NODEPREP-NOTE <text>" lines with `note`.
# A scenario ends with `scenario_end`, which prints NODEPREP-SCENARIO-END.

RUN_DIR=/run/nodeprep-test
STEP_LOG=$RUN_DIR/step.log
WHY_FILE=$RUN_DIR/step.why
NP_OUT=$RUN_DIR/np.out
NP_ERR=$RUN_DIR/np.err
NP_RC=
# Bound on one nodeprep run: a hang fails its step instead of eating the
# host's whole boot timeout (and every later step).
NP_TIMEOUT=120
mkdir -p "$RUN_DIR"

uptime_s() { cut -d' ' -f1 /proc/uptime; }

note() {
    echo "NODEPREP-NOTE $*"
}

# note_lines PREFIX < text: one note per input line (at most 40).
note_lines() {
    local prefix=$1 line n=0
    while IFS= read -r line; do
        n=$((n + 1))
        [ "$n" -le 40 ] || { note "$prefix: (more lines cut)"; break; }
        note "$prefix: $line"
    done
}

# Record why the current step fails, and fail.
why() {
    echo "$*" >"$WHY_FILE"
    echo "!! $*" >>"$STEP_LOG"
    return 1
}

# run_step NAME FUNCTION
run_step() {
    local name=$1 fn=$2 rc started
    : >"$STEP_LOG"
    rm -f "$WHY_FILE"
    started=$(uptime_s)
    echo "NODEPREP-STEP-BEGIN $name"
    # Not in a conditional context, so `set -e` stays effective in the
    # subshell (inside `if ( ... )` bash would ignore it).
    set +e
    ( set -e; "$fn" )
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "NODEPREP-STEP $name PASS ($(awk -v a="$started" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }')s)"
        if grep -q 'nodeprep\.verbose=1' /proc/cmdline; then
            sed 's/^/  | /' "$STEP_LOG"
        fi
    else
        local why_text="step ended with status $rc"
        [ -s "$WHY_FILE" ] && why_text=$(head -n 1 "$WHY_FILE")
        echo "NODEPREP-STEP $name FAIL $why_text"
        sed 's/^/  | /' "$STEP_LOG"
    fi
    return 0
}

scenario_end() {
    echo "NODEPREP-SCENARIO-END"
}

# log TEXT: a line in the step transcript.
log() {
    echo "# $*" >>"$STEP_LOG"
}

# run CMD...: run a command, log it and its output; fail the step on a
# non-zero exit.
run() {
    local rc=0
    echo "\$ $*" >>"$STEP_LOG"
    "$@" >>"$STEP_LOG" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] || why "command failed (exit $rc): $*"
}

# np ARGS...: run nodeprep; stdout in $NP_OUT, stderr in $NP_ERR, exit status
# in $NP_RC; everything logged. Never fails by itself.
np() {
    NP_RC=0
    echo "\$ nodeprep $*" >>"$STEP_LOG"
    timeout "$NP_TIMEOUT" /usr/bin/nodeprep "$@" >"$NP_OUT" 2>"$NP_ERR" || NP_RC=$?
    sed 's/^/  stdout: /' "$NP_OUT" >>"$STEP_LOG"
    sed 's/^/  stderr: /' "$NP_ERR" >>"$STEP_LOG"
    echo "  exit status: $NP_RC" >>"$STEP_LOG"
    [ "$NP_RC" -ne 124 ] || why "nodeprep $* did not finish within ${NP_TIMEOUT}s"
}

# expect_rc WANT: the last np exit status.
expect_rc() {
    [ "$NP_RC" -eq "$1" ] || why "nodeprep exited $NP_RC, expected $1 ($(head -c 300 "$NP_ERR" | tr '\n' ' '))"
}

# json FILE EXPR: evaluate a Python expression over the JSON document in
# FILE (bound to `d`) and print the result. python3 is there for cloud-init.
json() {
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# expect_json FILE EXPR WANT
expect_json() {
    local got
    got=$(json "$1" "$2" 2>>"$STEP_LOG") || why "cannot read $2 from the JSON in $1"
    echo "# $2 = $got" >>"$STEP_LOG"
    [ "$got" = "$3" ] || why "$2 is $got, expected $3"
}

# wait_for SECONDS CMD...: retry CMD every 0.5 s until it succeeds; fails
# after SECONDS. Prints the seconds waited.
wait_for() {
    local limit=$1 start now
    shift
    start=$(uptime_s)
    while ! "$@" >/dev/null 2>&1; do
        now=$(uptime_s)
        if awk -v a="$start" -v b="$now" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
            return 1
        fi
        sleep 0.5
    done
    awk -v a="$start" -v b="$(uptime_s)" 'BEGIN { printf "%.1f\n", b - a }'
}

# unit_prop UNIT PROPERTY
unit_prop() {
    systemctl show -p "$2" --value "$1" 2>/dev/null
}

# expect_plan_is_apply DRY REAL: the run whose JSON report is in REAL did
# exactly the actions the dry run in DRY listed (a failed resource: a
# prefix of them), resource by resource.
expect_plan_is_apply() {
    local got
    got=$(python3 - "$1" "$2" <<'PY' 2>&1
import json, sys
dry, real = (json.load(open(p)) for p in sys.argv[1:3])
planned = {r["id"]: r.get("actions", []) for r in dry["resources"]}
bad = []
for r in real["resources"]:
    p, d = planned.get(r["id"], []), r.get("actions", [])
    if (p[:len(d)] != d) if r["status"] == "failed" else (p != d):
        bad.append("%s: planned %s, did %s" % (r["id"], p, d))
print("; ".join(bad) or "same")
PY
    )
    echo "# plan = apply: $got" >>"$STEP_LOG"
    [ "$got" = same ] || why "the run did other actions than the plan listed: $got"
}

# np_planned VERB ARGS...: `VERB --dry-run ARGS` then `VERB ARGS`, both
# --format json, checking plan = apply; the real run's results stay in
# $NP_OUT/$NP_RC.
np_planned() {
    local verb=$1
    shift
    np --format json "$verb" --dry-run "$@"
    cp "$NP_OUT" "$RUN_DIR/np.planned"
    np --format json "$verb" "$@"
    expect_plan_is_apply "$RUN_DIR/np.planned" "$NP_OUT"
}
