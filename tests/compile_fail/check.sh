#!/usr/bin/env bash
# Compiles each case of snippets.cc, which must fail with the message its
# "// expect:" line names (and with that error only: a static_assert that
# fires beside an error from deep inside select.h says less than it should),
# and the "good" control, which must compile. `./weft test` runs it on
# whole plain runs and counts its summary line; run it from anywhere:
#
#   tests/compile_fail/check.sh            # c++, and clang++-14 if installed
#   tests/compile_fail/check.sh g++-12     # these compilers only
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
src="$root/tests/compile_fail/snippets.cc"
compilers=("$@")
if ((${#compilers[@]} == 0)); then
  compilers=(c++)
  command -v clang++-14 >/dev/null && compilers+=(clang++-14)
fi
flags=(-std=c++20 -fsyntax-only -Wall -Wextra -Werror -I"$root/runtime/include"
  -I"$root/poller/include" -I"$root/context/include" -I"$root/net/include")
cases=$(sed -n 's/^#elif defined(WEFT_CASE_\([a-z_]*\)).*/\1/p' "$src")
failed=0 passed=0
for cxx in "${compilers[@]}"; do
  if ! out=$("$cxx" "${flags[@]}" -DWEFT_CASE_good "$src" 2>&1); then
    echo "FAIL $cxx good: the control does not compile:"
    echo "$out"
    failed=$((failed + 1))
    continue
  fi
  for c in $cases; do
    expect=$(awk -v c="$c" '$0 ~ "WEFT_CASE_" c "\\)" {f=1; next} f && /expect:/ {sub(/.*expect: /, ""); print; exit}' "$src")
    if out=$("$cxx" "${flags[@]}" "-DWEFT_CASE_$c" "$src" 2>&1); then
      echo "FAIL $cxx $c: compiled"
      failed=$((failed + 1))
    elif ! grep -qF -- "$expect" <<<"$out"; then
      echo "FAIL $cxx $c: no \"$expect\" in:"
      echo "$out"
      failed=$((failed + 1))
    elif (($(grep -c 'error:' <<<"$out") != 1)); then
      echo "FAIL $cxx $c: more than the one error:"
      echo "$out"
      failed=$((failed + 1))
    else
      echo "ok   $cxx $c"
      passed=$((passed + 1))
    fi
  done
done
echo "compile-fail: $passed passed, $failed failed"
((failed == 0))
