#!/usr/bin/env bash
# Refresh the page's vendored JavaScript libraries from the npm registry (maintainers only).
#
#     scripts/vendor-js.sh                      # the versions pinned below
#     MARKED=18.2.1 scripts/vendor-js.sh        # another version of one of them
#
# Each library's released browser file (an ES module) is copied with its
# LICENSE and a VERSION file into src/h2ochat/server/web/static/vendor/<name>/.
# Needs npm and tar; nothing here runs at install time.
set -euo pipefail
cd "$(dirname "$0")/.."

MARKED=${MARKED:-18.2.1}
DOMPURIFY=${DOMPURIFY:-3.5.0}
HIGHLIGHT=${HIGHLIGHT:-11.12.0}   # @highlightjs/cdn-assets: highlight.js's own prebuilt browser release

VENDOR=src/h2ochat/server/web/static/vendor
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# fetch PACKAGE VERSION NAME FILE-IN-PACKAGE TARGET-FILE
fetch() {
    local package=$1 version=$2 name=$3 source=$4 target=$5
    (cd "$WORK" && npm pack --silent "$package@$version" > /dev/null)
    local tarball
    tarball=$(ls "$WORK"/*.tgz)
    mkdir -p "$WORK/$name" "$VENDOR/$name"
    tar -xzf "$tarball" -C "$WORK/$name"
    rm "$tarball"
    cp "$WORK/$name/package/$source" "$VENDOR/$name/$target"
    cp "$WORK/$name/package/LICENSE" "$VENDOR/$name/LICENSE"
    printf '%s %s\n%s\n' "$package" "$version" "$(npm view "$package@$version" dist.tarball)" > "$VENDOR/$name/VERSION"
    echo "$package $version -> $VENDOR/$name/$target"
}

fetch marked "$MARKED" marked lib/marked.esm.js marked.esm.js
fetch dompurify "$DOMPURIFY" dompurify dist/purify.es.mjs purify.es.mjs
fetch @highlightjs/cdn-assets "$HIGHLIGHT" highlight.js es/highlight.min.js highlight.min.js
