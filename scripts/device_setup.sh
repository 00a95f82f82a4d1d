#!/usr/bin/env bash
# Source this on a lent GPU machine (no internet, no Debian TTS) to make the data
# engine's dependencies usable there from what was carried in .carry/:
#   .carry/debs/*.deb    flite + libflite1 + libasound2, unpacked into a private prefix
#   .carry/wheels/*.whl  cp312 wheels for soundfile, soxr (+ cffi), espeakng-loader
#   .carry/festival/     optional: debs/*.deb (festival, libestools2.5, lexicons, voices) and
#                        lib/ (the shared libraries `ldd festival` lists beyond glibc/libstdc++)
# Usage:  source scripts/device_setup.sh
set -e
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix=/tmp/dystream-prefix
mkdir -p "$prefix"
for deb in "$here"/.carry/debs/*.deb; do dpkg -x "$deb" "$prefix"; done
export DYSTREAM_FLITE="$prefix/usr/bin/flite"
export DYSTREAM_FLITE_LIB="$prefix/usr/lib/x86_64-linux-gnu"
export LD_LIBRARY_PATH="$DYSTREAM_FLITE_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -d "$here/.carry/festival/debs" ]; then   # Festival: .debs + the shared libraries it links
    for deb in "$here"/.carry/festival/debs/*.deb; do dpkg -x "$deb" "$prefix"; done
    export DYSTREAM_FESTIVAL="$prefix/usr/bin/festival"
    export DYSTREAM_FESTIVAL_LIB="$here/.carry/festival/lib:$prefix/usr/lib/x86_64-linux-gnu"
    export DYSTREAM_FESTIVAL_DATA="$prefix/usr/share/festival"
fi
python3 -m pip install -q --no-index --find-links "$here/.carry/wheels" soundfile soxr espeakng-loader 2>&1 | grep -v "^WARNING" || true
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
set +e
