#!/usr/bin/env bash
# Runs lintian (Debian's package checker) on a nodeprep .deb as the tests
# do: every tag down to pedantic and info is shown, overridden ones too
# (O:, justified in packaging/deb/lintian-overrides, which the package
# ships); the run fails on any error or warning that is not overridden.
#
#   packaging/lintian.sh target/debian/nodeprep_0.1.0-1_amd64.deb
#
# Exit status: 0 clean; 1 errors or warnings (or lintian failed); 77
# lintian is not installed.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 PACKAGE.deb" >&2; exit 64; }
command -v lintian >/dev/null || { echo "lintian.sh: lintian is not installed (apt-get install lintian)" >&2; exit 77; }
# lintian warns when run as root; the package is only read. With
# --show-overrides lintian's own exit status also counts the overridden
# tags (status 2), so the verdict is read from the lines it prints: E: and
# W: are errors and warnings nobody justified; O: lines are overridden.
rc=0
out=$(lintian --pedantic --display-info --show-overrides "$1" 2>&1) || rc=$?
printf '%s\n' "$out" | grep -v '^running with root privileges is not recommended!$' || true
[ "$rc" -eq 0 ] || { echo "lintian.sh: lintian itself failed (exit $rc)" >&2; exit 1; }
if printf '%s\n' "$out" | grep -q '^[EW]: '; then
    echo "lintian.sh: $(printf '%s\n' "$out" | grep -c '^[EW]: ') error(s) or warning(s) without an override" >&2
    exit 1
fi
echo "lintian.sh: no errors, no warnings without an override ($(printf '%s\n' "$out" | grep -c '^O: ') overridden)" >&2
