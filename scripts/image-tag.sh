#!/usr/bin/env bash
# Prints the image tag of the working tree: the short commit of HEAD, and for a tree
# with changes (untracked files too: they can be part of the build context)
# "-dirty-" and a hash of those changes, so that every further edit gets a new tag and
# `make kind-up` rolls the pods onto the rebuilt images.
set -euo pipefail
cd "$(dirname "$0")/.."
sha=$(git rev-parse --short HEAD 2>/dev/null) || { echo nogit; exit 0; }
if [ -z "$(git status --porcelain 2>/dev/null)" ]; then
  echo "$sha"
  exit 0
fi
# sha256sum (GNU) or shasum (macOS).
if command -v sha256sum >/dev/null; then hash=(sha256sum); else hash=(shasum -a 256); fi
changes=$(
  {
    git diff HEAD --binary
    git ls-files --others --exclude-standard | while IFS= read -r path; do
      printf '%s\n' "$path"
      cat -- "$path"
    done
  } | "${hash[@]}" | cut -c1-8
)
echo "$sha-dirty-$changes"
