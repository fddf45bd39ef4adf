#!/bin/sh
# The model's Python, moved from its own image into the watcher's, for the cyclesafe image target.
#
# The model (upstream's: Python 3.7 and 2018 packages) and the watcher (Python 3.11+) each need
# their own interpreter. The model's moves, not the watcher's: a program built against an older
# C library runs on a newer one, not the other way round, and the model's image is the older one.
# It moves to a prefix of its own (DEST, e.g. /opt/model-python), because both official images
# keep their Python in /usr/local; CPython finds its standard library from where its executable
# is, so a copied interpreter runs from there.
#
#   model-python.sh pack PYTHON DEST      in the model's image: PYTHON's executable and standard
#                                         library (no site-packages) copied to DEST
#   model-python.sh libs DEST DIR...      in the model's image, once the venv (DIR) is installed:
#                                         the shared libraries that DEST and DIR load from outside
#                                         themselves, copied to DEST/libs
#   model-python.sh install DEST DIR...   in the watcher's image: the libraries that image has
#                                         already (the same or a newer build) removed, DEST/libs
#                                         added to the dynamic linker's path, and every shared
#                                         object of DEST and DIR checked to load
#
# Only names the watcher's image lacks go to DEST/libs (libssl.so.1.1, libffi.so.7,
# libpython3.7m.so.1.0, ...), so nothing of the watcher's ever loads one of the model's
# libraries. Needs a glibc-based model image (Debian's, as python:*-slim) at most as new as
# the watcher's.
set -eu
export LC_ALL=C  # one collation for the lists compared across the two images

die() { echo "model-python.sh: $*" >&2; exit 1; }

elf_files() {  # the shared objects and executables under the given folders (od on every file would take long)
  find "$@" -type f \( -name '*.so' -o -name '*.so.*' -o -path '*/bin/*' \) | while IFS= read -r f; do
    case "$(od -An -c -N4 "$f" 2>/dev/null)" in *E*L*F*) echo "$f" ;; esac
  done
}

unresolved() {  # "FILE: NAME" for each library a shared object under the folders finds nowhere
  elf_files "$@" | while IFS= read -r f; do
    ldd "$f" 2>&1 | awk -v f="$f" '/not found/ { print f ": " $1 }'
  done | sort
}

pack_python() {
  python="$1" dest="$2"
  command -v "$python" >/dev/null || die "no $python in the model's image (set MODEL_PYTHON)"
  # exe, ver, stdlib, platstdlib
  eval "$("$python" -c 'import os, sys, sysconfig
paths = sysconfig.get_paths()
print("exe=%s ver=%d.%d stdlib=%s platstdlib=%s" % (os.path.realpath(sys.executable), sys.version_info[0],
      sys.version_info[1], paths["stdlib"], paths["platstdlib"]))')"
  mkdir -p "$dest/bin" "$dest/lib"
  cp "$exe" "$dest/bin/python$ver"
  ln -s "python$ver" "$dest/bin/python3"
  cp -a "$stdlib" "$dest/lib/python$ver"
  if [ "$platstdlib" != "$stdlib" ]; then cp -a "$platstdlib/." "$dest/lib/python$ver/"; fi
  # The model's packages go into its venv; the base image's own (pip, setuptools) stay behind.
  rm -rf "$dest/lib/python$ver/site-packages" "$dest/lib/python$ver/dist-packages"
  mkdir "$dest/lib/python$ver/site-packages"
  # Debian's venv bootstraps pip from /usr/share/python-wheels, and its pip looks for its own
  # unbundled parts under the interpreter's prefix: they go with the interpreter.
  if [ -d /usr/share/python-wheels ]; then mkdir -p "$dest/share" && cp -a /usr/share/python-wheels "$dest/share/"; fi
  "$dest/bin/python3" -c 'import sys; assert sys.prefix == sys.argv[1], "prefix %s, not %s" % (sys.prefix, sys.argv[1])' "$dest" \
    || die "the copied interpreter does not find its standard library under $dest"
  echo "model-python.sh: Python $ver from $exe packed into $dest"
}

keep_libs() {
  dest="$1"; shift
  mkdir -p "$dest/libs"
  elf_files "$dest" "$@" | while IFS= read -r f; do
    ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 != "not" { print $1, $3 }'
  done | sort -u -k1,1 | while read -r name path; do
    case "$path" in "$dest"/*) continue ;; esac
    for dir in "$@"; do case "$path" in "$dir"/*) continue 2 ;; esac; done
    cp -L "$path" "$dest/libs/$name"
  done
  # What ldd finds nowhere here already (a wheel's bundled library whose siblings are found
  # only once its extension module has loaded them) is no concern in the watcher's image either.
  unresolved "$dest" "$@" > "$dest/libs.unresolved"
  echo "model-python.sh: $(ls "$dest/libs" | wc -l) shared libraries from the model's image kept in $dest/libs"
}

install_libs() {
  dest="$1"; shift
  known="$(ldconfig -p)"
  for lib in "$dest"/libs/*; do
    [ -e "$lib" ] || continue
    if printf '%s\n' "$known" | grep -qF "	${lib##*/} ("; then rm "$lib"; fi
  done
  echo "$dest/libs" > /etc/ld.so.conf.d/model-python.conf
  ldconfig
  broken="$(unresolved "$dest" "$@" | comm -23 - "$dest/libs.unresolved")"
  if [ -n "$broken" ]; then
    printf '%s\n' "$broken" | head -20 >&2
    die "the model's Python cannot load the libraries above in the watcher's image: build the watcher on a base at least as new as the model's (BASE_IMAGE, MODEL_PYTHON_IMAGE)"
  fi
  echo "model-python.sh: kept $(ls "$dest/libs" | wc -l) libraries the watcher's image lacks: $(ls "$dest/libs" | tr '\n' ' ')"
  "$dest/bin/python3" -c 'import sys; print("model-python.sh: model Python", sys.version.split()[0], "in", sys.prefix)'
}

cmd="${1:-}"
[ $# -ge 3 ] || die "usage: model-python.sh pack PYTHON DEST | libs DEST DIR... | install DEST DIR..."
shift
case "$cmd" in
  pack) pack_python "$@" ;;
  libs) keep_libs "$@" ;;
  install) install_libs "$@" ;;
  *) die "unknown command $cmd" ;;
esac
