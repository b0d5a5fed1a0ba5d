#!/usr/bin/env bash
# Checks of the libraries as other programs see them (run by .ci/run after the tests):
#  1. the DocC catalogs of KDCTFormats, KDCTAppliance and KDCTExport build without a warning;
#  2. Examples/convert-image, a separate package depending on the library by path, builds, links no Foundation,
#     and converts a fixture correctly (qemu-img compare and check are the oracle);
#  3. the public API is compared with the baseline (the tag `api-baseline`, made when the library's API settled;
#     its commit is also in scripts/api-baseline.commit) and any breaking change fails the run
#     (`swift package diagnose-api-breaking-changes`).
# Each step prints its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "== $1"; STEP_START=$(date +%s); }
done_step() { echo "== done in $(( $(date +%s) - STEP_START )) s"; }

step "DocC: KDCTFormats, KDCTAppliance, KDCTExport (warnings are errors)"
swift package generate-documentation --target KDCTFormats --target KDCTAppliance --target KDCTExport \
    --warnings-as-errors
done_step

step "Examples/convert-image: build, link check, run on a fixture"
example=Examples/convert-image
swift build --package-path "$example"
binary="$(swift build --package-path "$example" --show-bin-path)/convert-image"
# A program that only imports KDCTFormats must not load Foundation (or libxml2 through FoundationXML).
if ldd "$binary" | grep -E 'libFoundation|libxml2'; then
    echo "convert-image links Foundation or libxml2: KDCTFormats must not depend on them" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$binary" Fixtures/images/pattern.vmdk "$work/pattern.qcow2"
qemu-img compare -f vmdk -F qcow2 Fixtures/images/pattern.vmdk "$work/pattern.qcow2"
qemu-img check "$work/pattern.qcow2"
# A failure is one line on stderr and exit status 1.
set +e
"$binary" "$work/missing.vmdk" "$work/x.qcow2" 2>"$work/stderr"
status=$?
set -e
if [ "$status" -ne 1 ] || ! grep -q "not-found" "$work/stderr"; then
    echo "convert-image on a missing file: status $status, stderr: $(cat "$work/stderr")" >&2
    exit 1
fi
done_step

# The baseline is the tag api-baseline; a clone made without tags finds the same commit through
# scripts/api-baseline.commit. A clone that has neither (a shallow one) cannot compare, and says so.
baseline=""
if git rev-parse -q --verify 'refs/tags/api-baseline^{commit}' >/dev/null; then
    baseline=api-baseline
elif [ -f scripts/api-baseline.commit ]; then
    commit=$(tr -d ' \t\r\n' < scripts/api-baseline.commit)
    if git cat-file -e "$commit^{commit}" 2>/dev/null; then
        baseline=$commit
    else
        echo "== API: the baseline commit $commit is not in this clone (shallow?); no comparison made" >&2
    fi
fi
if [ -n "$baseline" ]; then
    step "API: breaking changes against $baseline ($(git rev-parse --short "$baseline^{commit}"))"
    swift package diagnose-api-breaking-changes "$baseline" --products KDCTFormats KDCTAppliance KDCTExport
    done_step
fi
