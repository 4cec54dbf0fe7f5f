#!/bin/sh
# List the functions in src/ longer than N lines (default 80), longest first:
# "lines file:start-end name". A function's lines run from the first line of
# its signature (ctags' line: the project's style keeps the return type on
# the line with the name, and a signature wrapped over several lines counts
# them all) to its closing brace (ctags' end field). Needs Universal Ctags.
# For issue #17's rule: a function over 80 lines is a parser state machine
# or a table (docs/architecture.md lists the ones there are).
set -eu
limit=${1:-80}
cd "$(dirname "$0")/.."
ctags -x --_xformat='%N %F %n %{end}' --kinds-C=f --fields=+ne -R --languages=C src |
    awk -v limit="$limit" '$4 != "" { n = $4 - $3 + 1; if (n > limit) printf "%d %s:%d-%d %s\n", n, $2, $3, $4, $1 }' |
    sort -rn
