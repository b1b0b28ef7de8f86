#!/usr/bin/env bash
# Installs a modelbake release binary for this runner: the tarball scripts/dist builds for the
# runner's architecture, checked against the release's SHA256SUMS before anything is unpacked.
# Never builds from source. Run by the GitHub Action (action.yml) and the GitLab component
# (templates/modelbake.yml, which carries a copy of this file); every input is an environment
# variable, so it runs the same anywhere:
#
#   MODELBAKE_VERSION      the release to install, e.g. 0.1.0 (required)
#   MODELBAKE_RELEASE_URL  where releases are downloaded from [the project's GitHub releases];
#                          files come from $MODELBAKE_RELEASE_URL/v$MODELBAKE_VERSION/NAME:
#                          modelbake-VERSION-TARGET.tar.gz and SHA256SUMS
#   MODELBAKE_SHA256       optional: the tarball's sha256, checked besides SHA256SUMS (a pin
#                          that holds even if the release's files were replaced)
#   MODELBAKE_INSTALL_DIR  where `modelbake` goes [${RUNNER_TEMP:-${TMPDIR:-/tmp}}/modelbake-VERSION/bin]
#   RUNNER_OS, RUNNER_ARCH as GitHub runners set them (Linux; X64 or ARM64); elsewhere
#                          uname -s and uname -m
#
# With GitHub's $GITHUB_OUTPUT it writes `bin=PATH` and `version=VERSION`, and adds the folder
# to $GITHUB_PATH. Needs curl or wget, sha256sum (or shasum), tar and gzip.
set -euo pipefail

default_release_url=https://github.com/acme/modelbake/releases/download

die() {
  if [ "${GITHUB_ACTIONS:-}" = true ]; then
    echo "::error title=modelbake install::$*"
  fi
  echo "modelbake install: error: $*" >&2
  exit 1
}

version=${MODELBAKE_VERSION:-}
[ -n "$version" ] || die "MODELBAKE_VERSION is empty: set the version input to a modelbake release, e.g. 0.1.0"
# A version becomes part of URLs and paths: only what a release version can look like.
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] \
  || die "'$version' is not a release version (like 0.1.0, without a leading v)"

base=${MODELBAKE_RELEASE_URL:-$default_release_url}
base=${base%/}
case "$base" in
  https://*) ;;
  http://127.0.0.1[:/]* | http://localhost[:/]* | http://\[::1\][:/]*) ;; # local test servers
  *) die "the release URL '$base' is not https: releases are only downloaded over https (plain http only from 127.0.0.1 or localhost)" ;;
esac

os=${RUNNER_OS:-$(uname -s)}
[ "$os" = Linux ] \
  || die "modelbake releases are Linux binaries and this runner is $os: run the job on a Linux runner (GitHub: runs-on: ubuntu-latest) or in a Linux container"
arch=${RUNNER_ARCH:-$(uname -m)}
case "$arch" in
  X64 | x86_64 | amd64) target=x86_64-unknown-linux-musl ;;
  ARM64 | aarch64 | arm64) target=aarch64-unknown-linux-musl ;;
  *) die "no modelbake release for the $arch architecture: releases exist for x86_64 (X64) and aarch64 (ARM64)" ;;
esac

pin=${MODELBAKE_SHA256:-}
if [ -n "$pin" ] && ! [[ "$pin" =~ ^[0-9a-f]{64}$ ]]; then
  die "MODELBAKE_SHA256 must be 64 lowercase hex digits (the sha256 of modelbake-$version-$target.tar.gz), not '$pin'"
fi

dir=${MODELBAKE_INSTALL_DIR:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}/modelbake-$version/bin}
asset="modelbake-$version-$target.tar.gz"
url="$base/v$version"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# download URL FILE: the body of URL into FILE; fails on any HTTP error.
download() {
  if command -v curl >/dev/null 2>&1; then
    curl --fail --silent --show-error --location --retry 3 --proto-redir =https \
      --output "$2" "$1" || return 1
  elif command -v wget >/dev/null 2>&1; then
    wget --quiet --tries=3 --output-document="$2" "$1" || return 1
  else
    die "neither curl nor wget is installed: add one to the job's image"
  fi
}

# sha256 FILE: the hex sha256 of FILE.
if command -v sha256sum >/dev/null 2>&1; then
  sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null 2>&1; then
  sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
else
  die "neither sha256sum nor shasum is installed: add coreutils to the job's image"
fi

echo "modelbake install: $asset from $url" >&2
download "$url/SHA256SUMS" "$tmp/SHA256SUMS" \
  || die "cannot download $url/SHA256SUMS: is modelbake $version released there? (check the version and release-url inputs)"
download "$url/$asset" "$tmp/$asset" \
  || die "cannot download $url/$asset: the release has no tarball for $target, or the download failed"

# The line for exactly this file (sha256sum writes "HEX  NAME", or "HEX *NAME" in binary mode).
expected=$(awk -v f="$asset" '$2 == f || $2 == "*" f { print $1 }' "$tmp/SHA256SUMS")
[ -n "$expected" ] || die "$url/SHA256SUMS has no line for $asset: refusing to install an unlisted file"
[[ "$expected" =~ ^[0-9a-f]{64}$ ]] || die "$url/SHA256SUMS lists '$expected' for $asset, not a sha256"
actual=$(sha256 "$tmp/$asset")
[ "$actual" = "$expected" ] \
  || die "checksum mismatch for $asset: SHA256SUMS says $expected, the download is $actual. Nothing was installed; retry, and report it if it persists"
if [ -n "$pin" ] && [ "$actual" != "$pin" ]; then
  die "checksum mismatch for $asset: the sha256 input pins $pin, the download (and the release's SHA256SUMS) is $actual. Nothing was installed: check which release you meant to pin"
fi

# Only the binary comes out of the tarball, into a private folder, then into place atomically.
member="modelbake-$version-$target/modelbake"
tar -xzf "$tmp/$asset" -C "$tmp" "$member" \
  || die "$asset has no $member: not a modelbake release tarball"
mkdir -p "$dir"
cp "$tmp/$member" "$dir/.modelbake.$$"
chmod 0755 "$dir/.modelbake.$$"
mv -f "$dir/.modelbake.$$" "$dir/modelbake"

said=$("$dir/modelbake" --version) || die "the installed $dir/modelbake does not run"
case "$said" in
  "modelbake $version "*) ;;
  *) die "the installed binary says '$said', not modelbake $version" ;;
esac
echo "modelbake install: $said at $dir/modelbake" >&2

if [ -n "${GITHUB_OUTPUT:-}" ]; then
  {
    echo "bin=$dir/modelbake"
    echo "version=$version"
  } >> "$GITHUB_OUTPUT"
fi
if [ -n "${GITHUB_PATH:-}" ]; then
  echo "$dir" >> "$GITHUB_PATH"
fi
