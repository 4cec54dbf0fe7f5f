#!/bin/sh
# List the functions in src/ longer than N lines (default 80), longest first:
# "lines file:start-end name". A function's lines run from the first line of
# its signature (ctags' line: the project's style keeps the return type on
# the line with the name, and a signature wrapped over several lines counts
# them all) to its closing brace (ctags' end field). Needs Universal Ctags.
#
# --check: fail (exit 1) when a function over 80 lines is not one of the
# ALLOWED below. Issue #17's rule: a function over 80 lines is a parser
# state machine or a table (docs/architecture.md, "Rules the code keeps").
# Part of `make lint`.
set -eu
check=0
if [ "${1:-}" = "--check" ]; then
    check=1
    shift
fi
limit=${1:-80}
# Parser state machines only.
ALLOWED="ws_parser_feed parse_string parse_heredoc redis_url_parse parse_authorization"
cd "$(dirname "$0")/.."
list=$(ctags -x --_xformat='%N %F %n %{end}' --kinds-C=f --fields=+ne -R --languages=C src |
    awk -v limit="$limit" '$4 != "" { n = $4 - $3 + 1; if (n > limit) printf "%d %s:%d-%d %s\n", n, $2, $3, $4, $1 }' |
    sort -rn)
if [ "$check" = 0 ]; then
    [ -n "$list" ] && printf '%s\n' "$list"
    exit 0
fi
bad=0
while read -r n where name; do
    [ -n "$name" ] || continue
    case " $(echo $ALLOWED) " in
    *" $name "*) ;;
    *)
        echo "long_functions: $where $name is $n lines: split it into named steps (over $limit lines only a parser state machine or a table)"
        bad=1
        ;;
    esac
done <<LIST
$list
LIST
exit $bad
