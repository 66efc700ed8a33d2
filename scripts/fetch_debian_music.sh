#!/usr/bin/env bash
# Fetch the Debian game-soundtrack packages used as the label-free pretraining corpus (issue 15).
#
#   bash scripts/fetch_debian_music.sh [DIR]      (default DIR: pretrain_corpus)
#   make pretrain-corpus [CORPUS_DIR=DIR]
#
# For each package: `apt-get download` into DIR/debs (no root needed; the package index must be
# current: run `sudo apt-get update` once if apt reports the package unknown), then `dpkg -x` into
# DIR/<pkg> (audio inside .pk3 zip archives is unpacked too). Idempotent: a package whose .deb is there is not downloaded again, one already unpacked
# (DIR/<pkg>/.unpacked) is not unpacked again. Finally prints the number of audio files, the total
# duration (header lengths via deam_mamba.data.audio.audio_info, the decoder `pretrain` uses) and the size.
# Licences: each package's copyright file lands in DIR/<pkg>/usr/share/doc/<pkg>/copyright.
set -euo pipefail
DIR="${1:-pretrain_corpus}"
PYTHON="${PYTHON:-python3}"
PACKAGES=(asc-music singularity-music wesnoth-1.16-music ufoai-music nexuiz-music warzone2100-music)

command -v apt-get >/dev/null || { echo "apt-get not found: this script needs a Debian/Ubuntu system" >&2; exit 1; }
command -v dpkg >/dev/null || { echo "dpkg not found: this script needs a Debian/Ubuntu system" >&2; exit 1; }
mkdir -p "$DIR/debs"
DIR="$(cd "$DIR" && pwd)"

for pkg in "${PACKAGES[@]}"; do
  if [[ -f "$DIR/$pkg/.unpacked" ]]; then
    echo "$pkg: already unpacked"
    continue
  fi
  deb=$(ls "$DIR/debs/${pkg}"_*.deb 2>/dev/null | head -n1 || true)
  if [[ -z "$deb" ]]; then
    echo "$pkg: downloading"
    (cd "$DIR/debs" && apt-get download -q "$pkg") || {
      echo "$pkg: apt-get download failed (run 'sudo apt-get update' first, or check the package name)" >&2
      exit 1
    }
    deb=$(ls "$DIR/debs/${pkg}"_*.deb | head -n1)
  fi
  echo "$pkg: unpacking $(basename "$deb")"
  rm -rf "$DIR/$pkg.tmp"
  dpkg -x "$deb" "$DIR/$pkg.tmp"
  # ufoai-music and nexuiz-music ship their .ogg tracks inside .pk3 (zip) archives: unpack the audio members
  "$PYTHON" - "$DIR/$pkg.tmp" <<'PY'
import sys
import zipfile
from pathlib import Path

root = Path(sys.argv[1])
for pk3 in sorted(root.rglob("*.pk3")):
    with zipfile.ZipFile(pk3) as z:
        members = [m for m in z.namelist() if m.lower().endswith((".ogg", ".wav", ".flac", ".mp3", ".opus"))]
        z.extractall(root / "pk3_audio" / pk3.stem, members)
        print(f"  {pk3.name}: {len(members)} audio files unpacked")
PY
  rm -rf "$DIR/$pkg"
  mv "$DIR/$pkg.tmp" "$DIR/$pkg"
  touch "$DIR/$pkg/.unpacked"
done

echo "corpus in $DIR"
"$PYTHON" - "$DIR" "${PACKAGES[@]}" <<'PY'
import sys
from pathlib import Path

from deam_mamba.core.errors import AudioDecodeError
from deam_mamba.data.audio import audio_info
from deam_mamba.inference.files import collect_audio_files

root, packages = Path(sys.argv[1]), sys.argv[2:]
total_s, total_n, total_b = 0.0, 0, 0
for pkg in packages:
    files, _ = collect_audio_files([root / pkg])
    secs, bad = 0.0, 0
    for f in files:
        try:
            secs += audio_info(f)[0]
        except AudioDecodeError:
            bad += 1
    size = sum(f.stat().st_size for f in files)
    print(f"{pkg:22s} {len(files):4d} files {secs / 3600:6.2f} h {size / 1e6:8.1f} MB" + (f" ({bad} unreadable)" if bad else ""))
    total_s, total_n, total_b = total_s + secs, total_n + len(files), total_b + size
print(f"{'total':22s} {total_n:4d} files {total_s / 3600:6.2f} h {total_b / 1e6:8.1f} MB")
PY
