#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian-like machine: system packages, .venv/, the pinned stack.
# A second run checks what is there and installs only what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.voicelock-installed"
PY=${PYTHON:-python3}
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# `setup.sh pipeline` (make repro) leaves out what only the tests use — chromium and postgresql, ~26 s
# of a fresh machine's `make repro` (measured: chromium 21 s); `make test` installs them.
WHAT=${1:-all}
case "$WHAT" in all|pipeline) ;; *) printf '[setup] unknown argument %s: use "all" (default) or "pipeline"\n' "$WHAT"; exit 2;; esac

say() { printf '[setup] %s\n' "$*"; }

# --- system packages: espeak-ng and festival speak the embedded corpus, flite the unseen voices it is judged on;
# Debian's chromium runs the page's end-to-end test (tests/test_browser.py; Playwright drives it,
# never downloading a browser); Debian's postgresql the real-database tests ------------------------
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v flite >/dev/null 2>&1 || missing+=(flite)
# Debian's python3 makes virtual environments only with python3-venv (ensurepip)
"$PY" -c "import ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
# festival and the voices of data.synth.festival_voices (voicelock/data/festival.py)
for pkg in festival festvox-kdlpc16k festvox-italp16k festvox-itapc16k festvox-czech-dita festvox-czech-ph \
           festvox-czech-krb festvox-czech-machac festvox-suopuhe-lj festvox-suopuhe-mv festvox-ru; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "$WHAT" = all ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  # PostgreSQL: the tests run the store and two service replicas on a throw-away cluster (tests/servers.py)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
fi
# MBROLA and the databases of data.synth.mbrola_voices (mb-de2-en → mbrola-de2), read from params.yaml so the
# list lives in one place — and for the tests, those of their tiny corpus (tests/conftest.py). They are in
# Debian's contrib and non-free components (voicelock/data/mbrola.py).
voice_lists=$(awk '/^ *mbrola_voices:/{on=1} on{sub(/#.*/, ""); print} on&&/\]/{exit}' params.yaml)
[ "$WHAT" != all ] || voice_lists+=$(grep '"mbrola_voices"' tests/conftest.py | sed 's/#.*//' || true)
mbrola=()
for db in $(echo "$voice_lists" | grep -o 'mb-[a-z]*[0-9]' | sed 's/^mb-//' | sort -u || true); do
  [ -e "/usr/share/mbrola/$db/$db" ] || mbrola+=("mbrola-$db")
done
[ ${#mbrola[@]} -eq 0 ] || command -v mbrola >/dev/null 2>&1 || mbrola+=(mbrola)
if [ ${#missing[@]} -gt 0 ] || [ ${#mbrola[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    say "missing system packages — install them as root and re-run: apt-get install ${missing[*]:-} ${mbrola[*]:-}" \
        "(the mbrola ones from Debian's contrib and non-free components)"; exit 1
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ${#mbrola[@]} -gt 0 ]; then
  # Fetched through a sources list of our own, so the machine's sources never gain contrib or non-free;
  # apt installs the downloaded packages (and anything they need from the machine's own sources).
  by_hand="install them by hand (${mbrola[*]}) or empty data.synth.mbrola_voices"
  distro=$( (. /etc/os-release 2>/dev/null && echo "${ID:-} ${VERSION_CODENAME:-}") || true)
  read -r distro_id codename <<< "$distro" || true
  [ "${distro_id:-}" = debian ] && [ -n "${codename:-}" ] \
    || { say "MBROLA voices: this is not Debian (/etc/os-release: '${distro}') — $by_hand"; exit 1; }
  say "installing MBROLA and ${#mbrola[@]} voice packages from Debian contrib/non-free ($codename)"
  apt_dir=$(mktemp -d)
  trap '$SUDO rm -rf "$apt_dir"' EXIT
  echo "deb http://deb.debian.org/debian $codename contrib non-free" > "$apt_dir/sources.list"
  # apt's lists and package cache of its own too, so the machine's apt state is untouched but for the install
  own=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
  $SUDO apt-get "${own[@]}" update -qq 2>"$apt_dir/err" \
    || { say "MBROLA voices: apt-get update of Debian contrib/non-free failed ($(tail -2 "$apt_dir/err" | tr '\n' ' ')) — $by_hand"; exit 1; }
  # (apt warns that its sandbox user cannot write a root-owned folder, and downloads as root instead)
  (cd "$apt_dir/debs" && $SUDO apt-get -qq "${own[@]}" download "${mbrola[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) \
    || true
  got=$(cd "$apt_dir/debs" && ls ./*.deb 2>/dev/null | sed 's#^\./##; s/_.*//' | sort | tr '\n' ' ' || true)
  [ "$(echo "$got" | wc -w)" -eq ${#mbrola[@]} ] \
    || { say "MBROLA voices: downloaded only '${got}' of ${mbrola[*]} — check the network, or $by_hand"; exit 1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$apt_dir"/debs/*.deb >/dev/null
fi

# --- virtual environment with the pinned stack --------------------------------------------------
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  say "installing the Python stack into $VENV (CPU torch 2.13.0; a first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # --no-compile: pip would byte-compile every module of the stack (a 64 s install took 30 s without, measured);
  # Python compiles the few it imports on first use instead (and caches them: the Makefile lets it).
  # torch first, the CPU build by name (+cpu), so nothing later can resolve a CUDA one: from what pip
  # already reaches (this project's machines keep the wheel locally), else from PyTorch's CPU index —
  # PyPI's torch for Linux is the CUDA build.
  "$VENV/bin/pip" install -q --no-compile -c constraints.txt "torch==2.13.0+cpu" 2>/dev/null \
    || "$VENV/bin/pip" install -q --no-compile -c constraints.txt --extra-index-url "$TORCH_CPU_INDEX" "torch==2.13.0+cpu"
  "$VENV/bin/pip" install -q --no-compile --no-deps -c constraints.txt torchaudio==2.11.0
  "$VENV/bin/pip" install -q --no-compile -c constraints.txt -e '.[test]'
  echo "$want" > "$STAMP"
fi
# torchaudio's wheel ships CUDA-linked extension libraries that fail to load on a CPU-only machine;
# without them it marks the extension unavailable and the transforms we use work (shared/notes/stack.md).
rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
"$VENV/bin/python" -c "import torch, torchaudio; assert not torch.version.cuda, 'a CUDA torch was installed'" \
  || { say "torch/torchaudio do not import: delete $VENV and re-run"; exit 1; }
"$VENV/bin/dvc" config --local core.analytics false >/dev/null 2>&1 || true
say "ready: $VENV"
