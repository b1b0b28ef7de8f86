#!/usr/bin/env bash
# Runs modelbake commands for a CI job and reports what later steps need: the digest of the
# image the last `bake` wrote or pushed, and the sha256 of the lock. Run by the GitHub Action
# (action.yml) and the GitLab component (templates/modelbake.yml, which carries a copy of this
# file); every input is an environment variable:
#
#   MODELBAKE_RUN          modelbake commands, one per line, with or without the leading
#                          `modelbake`; words split at blanks, '...' and "..." quote, nothing is
#                          expanded or evaluated; empty lines and lines starting with # are
#                          skipped. `bake` gets --json (unless given) for the digest.
#   MODELBAKE_BIN          the modelbake binary [modelbake on PATH]
#   MODELBAKE_WORKDIR      the folder the commands run in [.]
#   MODELBAKE_LOCK         the lock whose sha256 is reported, relative to the folder this script
#                          starts in (the repository root) [models.lock]
#   MODELBAKE_STORE        modelbake's store (read by modelbake itself); a leading ~/ is $HOME
#   MODELBAKE_REGISTRY, MODELBAKE_REGISTRY_USER, MODELBAKE_REGISTRY_PASSWORD
#                          all three set: `modelbake login` (password on stdin) before the
#                          commands and `modelbake logout` after them; none set: no login
#   MODELBAKE_REGISTRY_INSECURE  true: log in over plain http (local test registries only)
#   MODELBAKE_DOTENV       a file to write MODELBAKE_IMAGE_DIGEST=... and MODELBAKE_LOCK_SHA256=...
#                          to (GitLab's dotenv report; a variable without a value is left out)
#
# On GitHub ($GITHUB_ACTIONS=true) the password is masked with ::add-mask:: first, each command
# is a collapsible group, and `image-digest=` and `lock-sha256=` go to $GITHUB_OUTPUT.
# A failing command stops the run with its exit code (3: the lock is out of date).
set -euo pipefail

github=${GITHUB_ACTIONS:-false}

die() {
  if [ "$github" = true ]; then
    echo "::error title=modelbake::$*"
  fi
  echo "modelbake run: error: $*" >&2
  exit 1
}

warn() {
  if [ "$github" = true ]; then
    echo "::warning title=modelbake::$*"
  fi
  echo "modelbake run: warning: $*" >&2
}

bin=${MODELBAKE_BIN:-modelbake}
if ! command -v "$bin" >/dev/null 2>&1; then
  die "cannot find the modelbake binary '$bin': run ci/install.sh first (the action and the component do), or set MODELBAKE_BIN"
fi
bin=$(command -v "$bin")
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac

commands=${MODELBAKE_RUN:-}
[ -n "${commands//[[:space:]]/}" ] \
  || die "nothing to run: set the run input to modelbake commands, one per line (e.g. 'lock --locked' and 'bake --push REGISTRY/IMAGE:TAG')"

workdir=${MODELBAKE_WORKDIR:-.}
[ -d "$workdir" ] || die "the working directory '$workdir' does not exist (in $PWD)"
lock=${MODELBAKE_LOCK:-models.lock}
case "$lock" in /*) ;; *) lock="$PWD/$lock" ;; esac
beside="$PWD/$workdir/models.lock"

if [ -n "${MODELBAKE_STORE:-}" ]; then
  # The literal ~/ of an input (actions/cache expands it the same way).
  # shellcheck disable=SC2088
  case "$MODELBAKE_STORE" in "~/"*) MODELBAKE_STORE="$HOME/${MODELBAKE_STORE#"~/"}" ;; esac
  export MODELBAKE_STORE
fi

tmp=$(mktemp -d)
logged_in=
cleanup() {
  if [ -n "$logged_in" ]; then
    "$bin" logout "$logged_in" >/dev/null 2>&1 || warn "modelbake logout $logged_in failed: the credentials stay in the auth file"
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Every line is split before anything runs, so a typo on the last line costs no login and
# no bake.
count=0
lines=()
number=0
while IFS= read -r line || [ -n "$line" ]; do
  number=$((number + 1))
  line=${line%$'\r'}
  trimmed=${line#"${line%%[![:space:]]*}"}
  [ -z "$trimmed" ] && continue
  [ "${trimmed:0:1}" = "#" ] && continue
  # xargs splits words the way a shell would quote them, without expanding or running
  # anything ($VAR, $(...), globs stay literal).
  printf '%s\n' "$trimmed" | xargs printf '%s\0' > "$tmp/words" \
    || die "line $number of run: cannot split '$trimmed' into words (an unmatched quote?)"
  words=()
  while IFS= read -r -d '' word; do
    words+=("$word")
  done < "$tmp/words"
  if [ ${#words[@]} -gt 0 ] && [ "${words[0]}" = modelbake ]; then
    words=("${words[@]:1}")
  fi
  [ ${#words[@]} -gt 0 ] || die "line $number of run names no modelbake command: '$trimmed'"
  if [ "${words[0]}" = bake ]; then
    json=false
    for w in "${words[@]}"; do [ "$w" = --json ] && json=true; done
    [ "$json" = true ] || words+=(--json)
  fi
  count=$((count + 1))
  printf '%s\0' "${words[@]}" > "$tmp/command.$count"
  lines+=("$number")
done <<< "$commands"
[ "$count" -gt 0 ] || die "nothing to run: every line of the run input is empty or a comment"

registry=${MODELBAKE_REGISTRY:-}
user=${MODELBAKE_REGISTRY_USER:-}
password=${MODELBAKE_REGISTRY_PASSWORD:-}
if [ -n "$password" ] && [ "$github" = true ]; then
  # Each line of the secret: the runner masks line by line.
  while IFS= read -r line; do
    if [ -n "$line" ]; then echo "::add-mask::$line"; fi
  done <<< "$password"
fi
if [ -n "$registry$user$password" ]; then
  missing=()
  [ -n "$registry" ] || missing+=(MODELBAKE_REGISTRY)
  [ -n "$user" ] || missing+=(MODELBAKE_REGISTRY_USER)
  [ -n "$password" ] || missing+=(MODELBAKE_REGISTRY_PASSWORD)
  if [ ${#missing[@]} -gt 0 ]; then
    die "registry login needs the registry, the user and the password, and ${missing[*]} is empty (GitHub: the registry, registry-username and registry-password inputs; GitLab: CI_REGISTRY is empty when the project's container registry is off, then set registry-login: false)"
  fi
  login=("$bin" login "$registry" --username "$user" --password-stdin)
  [ "${MODELBAKE_REGISTRY_INSECURE:-false}" = true ] && login+=(--insecure)
  printf '%s' "$password" | "${login[@]}" >&2 \
    || die "modelbake login to $registry as $user failed (see above): check the registry and the credentials"
  logged_in=$registry
fi
unset password MODELBAKE_REGISTRY_PASSWORD

digest=
for i in $(seq 1 "$count"); do
  words=()
  while IFS= read -r -d '' word; do
    words+=("$word")
  done < "$tmp/command.$i"
  number=${lines[$((i - 1))]}
  [ "$github" = true ] && echo "::group::modelbake ${words[*]}"
  printf '+ modelbake' >&2
  printf ' %q' "${words[@]}" >&2
  printf '\n' >&2
  status=0
  if [ "${words[0]}" = bake ]; then
    (cd "$workdir" && "$bin" "${words[@]}") > "$tmp/bake.json" || status=$?
    cat "$tmp/bake.json"
  else
    (cd "$workdir" && "$bin" "${words[@]}") || status=$?
  fi
  [ "$github" = true ] && echo "::endgroup::"
  if [ "$status" -ne 0 ]; then
    [ "$github" = true ] && echo "::error title=modelbake::modelbake ${words[*]} failed with exit code $status"
    echo "modelbake run: line $number (modelbake ${words[*]}) failed with exit code $status" >&2
    exit "$status"
  fi
  if [ "${words[0]}" = bake ]; then
    # bake --json is pretty-printed with two-space indents: the top-level manifest_digest is
    # the image (or, for several platforms, the index) the tag points at.
    digest=$(sed -n 's/^  "manifest_digest": "\(sha256:[0-9a-f]\{64\}\)",\{0,1\}$/\1/p' "$tmp/bake.json")
    [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] \
      || die "cannot find the manifest digest in the output of modelbake ${words[*]}"
  fi
done

lock_sha256=
if [ -f "$lock" ]; then
  lock_sha256=$(sha256sum "$lock" | cut -d' ' -f1)
elif [ -f "$beside" ]; then
  warn "no lock at $lock, so lock-sha256 is empty: the commands ran in $workdir, so set the lock input to ${workdir%/}/models.lock"
else
  warn "no lock at $lock, so lock-sha256 is empty: set the lock input to the lock's path from the repository root"
fi
[ -n "$digest" ] || echo "modelbake run: no bake ran, so image-digest is empty" >&2

if [ -n "${GITHUB_OUTPUT:-}" ]; then
  {
    echo "image-digest=$digest"
    echo "lock-sha256=$lock_sha256"
  } >> "$GITHUB_OUTPUT"
fi
if [ -n "${MODELBAKE_DOTENV:-}" ]; then
  # GitLab's dotenv parser takes KEY=VALUE lines only: an empty value is left out.
  : > "$MODELBAKE_DOTENV"
  if [ -n "$digest" ]; then echo "MODELBAKE_IMAGE_DIGEST=$digest" >> "$MODELBAKE_DOTENV"; fi
  if [ -n "$lock_sha256" ]; then echo "MODELBAKE_LOCK_SHA256=$lock_sha256" >> "$MODELBAKE_DOTENV"; fi
fi
echo "modelbake run: image-digest=${digest:-(none)} lock-sha256=${lock_sha256:-(none)}" >&2
