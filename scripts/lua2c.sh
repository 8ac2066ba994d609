#!/bin/sh
# lua2c.sh IN.lua OUT.h: a Lua script as the body of a C string literal,
# one "line\n" per line, for an #include inside an initializer
# (lua/ngx_http_dstack_vpc_cp_lua.c).  Whole-line comments and blank lines
# are left out: Redis needs the code only.  OUT.h is rewritten only when
# its text changes, so that make rebuilds no more than it must.
# Used by the nginx module's config (at configure time) and lua/build.mk.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 IN.lua OUT.h" >&2
    exit 1
fi

in=$1
out=$2
tmp=$out.tmp.$$

{
    printf '/* generated from %s by scripts/lua2c.sh */\n' "${in##*/}"
    sed -e '/^[[:space:]]*--/d' -e '/^[[:space:]]*$/d' \
        -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/?/\\?/g' \
        -e 's/^/    "/' -e 's/$/\\n"/' "$in"
} >"$tmp"

if cmp -s "$tmp" "$out"; then
    rm -f "$tmp"
else
    mv -f "$tmp" "$out"
fi
