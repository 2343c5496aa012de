# Helpers shared by the guest scenarios (sourced; busybox ash).
# Installed in the initramfs as /lib/nodeprep-test/lib.sh by build.sh.
#
# A scenario defines one shell function per step and runs it with
#     run_step NAME FUNCTION
# which prints exactly one marker line on the console:
#     NODEPREP-STEP NAME PASS
#     NODEPREP-STEP NAME FAIL <why>
# followed, on failure, by the transcript of every command the step ran
# (each line prefixed with "  | "). The step function runs in a subshell
# with `set -e`, so any failing command, helper or expectation ends it;
# expectations record a reason with `why` before failing.
# A scenario ends with `scenario_end`, which prints NODEPREP-SCENARIO-END.

MODDIR=/lib/modules/nodeprep
STEP_LOG=/tmp/step.log
WHY_FILE=/tmp/step.why
NP_OUT=/tmp/np.out
NP_ERR=/tmp/np.err
NP_RC=
# Bound on one nodeprep run: a hang then fails its step instead of eating
# the whole boot timeout (and every later step) on the host side.
NP_TIMEOUT=60

# Record why the current step fails, and fail.
why() {
    echo "$*" >"$WHY_FILE"
    echo "!! $*" >>"$STEP_LOG"
    return 1
}

# run_step NAME FUNCTION
run_step() {
    _name=$1
    _fn=$2
    : >"$STEP_LOG"
    rm -f "$WHY_FILE"
    echo "NODEPREP-STEP-BEGIN $_name"
    # Not in a conditional context, so `set -e` stays effective in the
    # subshell (inside `if ( ... )` the shell would ignore it).
    ( set -e; "$_fn" )
    _rc=$?
    if [ "$_rc" -eq 0 ]; then
        echo "NODEPREP-STEP $_name PASS"
        # NODEPREP_VM_VERBOSE=1 on the host puts nodeprep.verbose=1 on the
        # kernel command line: then passing steps show their transcript too.
        if grep -q 'nodeprep\.verbose=1' /proc/cmdline; then
            sed 's/^/  | /' "$STEP_LOG"
        fi
    else
        _why="step ended with status $_rc"
        [ -s "$WHY_FILE" ] && _why=$(head -n 1 "$WHY_FILE")
        echo "NODEPREP-STEP $_name FAIL $_why"
        sed 's/^/  | /' "$STEP_LOG"
    fi
    return 0
}

scenario_end() {
    echo "NODEPREP-SCENARIO-END"
}

# run CMD...: run a command, log it and its output; fail the step on a
# non-zero exit.
run() {
    local rc=0
    echo "\$ $*" >>"$STEP_LOG"
    "$@" >>"$STEP_LOG" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] || why "command failed (exit $rc): $*"
}

# run_fails CMD...: like run, but the command is expected to fail.
run_fails() {
    echo "\$ $* (expected to fail)" >>"$STEP_LOG"
    if "$@" >>"$STEP_LOG" 2>&1; then
        why "command unexpectedly succeeded: $*"
        return 1
    fi
    return 0
}

# load_module NAME [PARAM=VALUE...]: insmod a module copied by build.sh
# after its dependencies (NAME.deps, from the module's .modinfo).
load_module() {
    local name="$1" dep
    shift
    [ -e "$MODDIR/$name.builtin" ] && return 0
    grep -q "^$name " /proc/modules && return 0
    for dep in $(cat "$MODDIR/$name.deps"); do
        load_module "$dep" || return 1
    done
    run insmod "$MODDIR/$name.ko" "$@"
}

# ------------------------------------------------------------- nodeprep ----

# np ARGS...: run nodeprep, keep stdout in $NP_OUT, stderr in $NP_ERR and the
# exit status in $NP_RC; log everything. Never fails by itself.
np() {
    echo "\$ nodeprep $*" >>"$STEP_LOG"
    NP_RC=0
    timeout "$NP_TIMEOUT" nodeprep "$@" >"$NP_OUT" 2>"$NP_ERR" || NP_RC=$?
    {
        echo "  -> exit $NP_RC$(np_timed_out)"
        echo "  [stdout]"
        cat "$NP_OUT"
        echo "  [stderr]"
        cat "$NP_ERR"
    } >>"$STEP_LOG"
    return 0
}

# busybox timeout kills with SIGTERM: exit status 143.
np_timed_out() {
    [ "$NP_RC" != 143 ] || echo " (killed after ${NP_TIMEOUT}s: timed out?)"
}

# expect_rc N: the last nodeprep call exited with N.
expect_rc() {
    [ "$NP_RC" = "$1" ] || why "nodeprep exited $NP_RC, expected $1"
}

# expect_one_json_line: --format json printed exactly one line on stdout,
# a JSON object.
expect_one_json_line() {
    [ "$(wc -l <"$NP_OUT")" -eq 1 ] || why "expected exactly one line of JSON on stdout, got $(wc -l <"$NP_OUT")"
    grep -q '^{.*}$' "$NP_OUT" || why "stdout is not a JSON object"
}

# res_status ID: the status of resource ID in the last JSON output. Takes
# the innermost {...} holding "id":"ID" so the key order inside a resource
# object does not matter.
res_status() {
    grep -o "{[^{}]*\"id\":\"$1\"[^{}]*}" "$NP_OUT" | head -n 1 |
        sed -n 's/.*"status":"\([a-z]*\)".*/\1/p'
}

# expect_status ID STATUS
expect_status() {
    local got
    got=$(res_status "$1")
    [ "$got" = "$2" ] || why "resource $1 has status '${got:-<absent>}', expected '$2'"
}

# summary_count KEY: a number from the JSON "summary" object.
summary_count() {
    grep -o '"summary":{[^}]*}' "$NP_OUT" | head -n 1 |
        sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"
}

expect_summary() {
    local got
    got=$(summary_count "$1")
    [ "$got" = "$2" ] || why "summary.$1 is '${got:-<absent>}', expected $2"
}

# expect_output_contains TEXT: stdout or stderr of the last nodeprep call
# contains TEXT (fixed string, case-sensitive).
expect_output_contains() {
    cat "$NP_OUT" "$NP_ERR" | grep -qF -- "$1" || why "nodeprep output does not mention '$1'"
}

# ---------------------------------------------------------------- links ----

link_exists() { [ -e "/sys/class/net/$1" ]; }

# link_is_up DEV: administratively up (IFF_UP), as `ip link` shows it.
link_is_up() {
    ip link show dev "$1" 2>/dev/null | head -n 1 | grep -q '[<,]UP[,>]'
}

# has_addr DEV CIDR
has_addr() {
    ip addr show dev "$1" 2>/dev/null | grep -q "inet $2 "
}

expect_link_up() {
    echo "\$ ip addr show dev $1" >>"$STEP_LOG"
    ip addr show dev "$1" >>"$STEP_LOG" 2>&1 || true
    link_exists "$1" || why "link $1 does not exist"
    link_is_up "$1" || why "link $1 is not UP"
}

expect_addr() {
    has_addr "$1" "$2" || why "address $2 missing on $1"
}

expect_no_addr() {
    ! has_addr "$1" "$2" || why "address $2 unexpectedly present on $1"
}

# ------------------------------------------------------- plan = apply ----

# actions_of FILE: one line "ID [ACTIONS]" per resource of a JSON report
# that lists actions (the innermost {...} holding an "id", as in
# res_status; fine for the link and consul-config resources run here).
actions_of() {
    grep -o '{[^{}]*"id":"[^"]*"[^{}]*}' "$1" | while IFS= read -r obj; do
        acts=$(echo "$obj" | grep -o '"actions":\[[^]]*\]')
        [ -n "$acts" ] || continue
        echo "$(echo "$obj" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p') $acts"
    done
}

# expect_plan_is_apply DRY REAL: the run in REAL did exactly the actions
# the dry run in DRY listed.
expect_plan_is_apply() {
    actions_of "$1" >"/tmp/actions.planned"
    actions_of "$2" >"/tmp/actions.done"
    {
        echo "# planned:"; cat "/tmp/actions.planned"
        echo "# done:"; cat "/tmp/actions.done"
    } >>"$STEP_LOG"
    cmp -s "/tmp/actions.planned" "/tmp/actions.done" ||
        why "the run did other actions than the plan listed (see the transcript)"
}

# np_planned VERB ARGS...: `VERB --dry-run` first, then the real VERB with
# the same ARGS, both --format json; checks plan = apply. (`plan` lists the
# same actions as `apply --dry-run`, plus diffs, whose braces the JSON
# scraping above could not take.) Leaves the real run's results in
# $NP_OUT/$NP_RC.
np_planned() {
    local verb=$1
    shift
    np --format json "$verb" --dry-run "$@"
    cp "$NP_OUT" "/tmp/np.planned"
    np --format json "$verb" "$@"
    expect_plan_is_apply "/tmp/np.planned" "$NP_OUT"
}
