#!/usr/bin/env bash
# Checks that every C++ source of the tree is formatted as .clang-format says (Debian 12's
# clang-format 14; scripts/setup.sh installs it). Run by ctest (test `format`); to fix:
#   git ls-files -- '*.cpp' '*.h' | xargs clang-format -i
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if ! command -v clang-format >/dev/null 2>&1; then
  echo "check_format: clang-format not found (apt-get install clang-format, or scripts/setup.sh)" >&2
  exit 1
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -- '*.cpp' '*.h')
else
  mapfile -t files < <(find framework models plugins algorithms rewards tests benchmarks docs -name '*.cpp' -o -name '*.h' | sort)
fi
if clang-format --dry-run --Werror "${files[@]}" 2>/tmp/sdpo_check_format.$$; then
  echo "check_format: ${#files[@]} files formatted"
  rm -f /tmp/sdpo_check_format.$$
  exit 0
fi
bad=$(grep -o '^[^:]*\.\(cpp\|h\):' /tmp/sdpo_check_format.$$ | sort -u | tr -d ':')
rm -f /tmp/sdpo_check_format.$$
echo "check_format: not formatted as .clang-format says (clang-format -i FILE fixes it):" >&2
echo "$bad" | sed 's/^/  /' >&2
exit 1
