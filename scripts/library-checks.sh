#!/usr/bin/env bash
# Checks of the libraries as other programs see them (run by .ci/run after the tests):
#  1. the DocC catalogs of KDCTFormats, KDCTAppliance and KDCTExport build without a warning;
#  2. Examples/convert-image, a separate package depending on the library by path, builds, links no Foundation,
#     and converts a fixture correctly (qemu-img compare and check are the oracle);
#  3. once the tag `api-baseline` exists (made when issue 15 is complete), the public API is compared with it and
#     any breaking change fails the run (`swift package diagnose-api-breaking-changes`).
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

if git rev-parse -q --verify refs/tags/api-baseline >/dev/null; then
    step "API: breaking changes against the tag api-baseline"
    swift package diagnose-api-breaking-changes api-baseline --products KDCTFormats KDCTAppliance KDCTExport
    done_step
else
    echo "== API: no tag api-baseline yet; the comparison starts once it is made"
fi
