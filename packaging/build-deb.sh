#!/usr/bin/env bash
# Builds kdct-native for installation on hosts without a Swift toolchain and packages it as a Debian 12 .deb.
#
#   packaging/build-deb.sh [OUTPUT_DIR]      (default OUTPUT_DIR: .build-deb/)
#
# The binary is linked with --static-swift-stdlib: the Swift runtime, Foundation (with its ICU data), FoundationXML,
# Dispatch, swift-crypto and swift-argument-parser are inside it, and it needs nothing from /opt/swift. It still links
# the C libraries the system provides (zlib, libdeflate, libzstd, libssh2, libxml2 for FoundationXML, libstdc++ for
# the Swift runtime). The package's Depends line is computed from the binary by dpkg-shlibdeps, and cross-checked:
# every NEEDED entry of the binary must belong to a package of that line (dpkg -S).
#
# The version comes from the VERSION file at the top of the repository (its only source).
# The build uses its own scratch path (.build-release-static/) so it never fights with debug builds in .build/.
# Needs: swift, the -dev packages of README's set-up plus libxml2-dev, dpkg-dev (dpkg-shlibdeps), binutils.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

fail() { echo "build-deb: $*" >&2; exit 1; }

output_dir=${1:-"$repo/.build-deb"}
scratch="$repo/.build-release-static"
package=kdct-native

# --- Preconditions, each named when missing -------------------------------------------------------------------
for tool in swift dpkg-deb dpkg-shlibdeps dpkg-query readelf strip gzip; do
    command -v "$tool" >/dev/null || fail "'$tool' is not installed (apt-get install -y dpkg-dev binutils; swift from swift.org)"
done
missing=()
for dev in zlib1g-dev libdeflate-dev libzstd-dev libssh2-1-dev libxml2-dev; do
    dpkg-query -W -f='${Status}' "$dev" 2>/dev/null | grep -q "install ok installed" || missing+=("$dev")
done
[ ${#missing[@]} -eq 0 ] || fail "missing build dependencies: ${missing[*]} (apt-get install -y ${missing[*]})"

[ -f VERSION ] || fail "VERSION file not found in $repo"
version=$(tr -d ' \t\r\n' < VERSION)
# Debian policy 5.6.12: upstream version starts with a digit; only alphanumerics and . + ~ (no hyphen: native).
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || fail "VERSION: '$version' is not a valid Debian version"
arch=$(dpkg --print-architecture)

# Reproducible timestamps: the last commit's time (dpkg-deb clamps tar mtimes to it), and the man page's date.
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct)}
else
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
fi
build_date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)

# --- Build -----------------------------------------------------------------------------------------------------
# --disable-local-rpath: no RUNPATH $ORIGIN (the binary lives in /usr/bin, next to no library of ours).
build_flags=(-c release --static-swift-stdlib --disable-local-rpath --scratch-path "$scratch")
start=$SECONDS
swift build "${build_flags[@]}" --product kdct-native
# swift-argument-parser's man page generator, run on the binary just built: the man page always matches the CLI.
swift build "${build_flags[@]}" --product generate-manual
echo "build-deb: release build with the static Swift stdlib took $((SECONDS - start)) s"
bin_dir=$(swift build "${build_flags[@]}" --show-bin-path)
binary="$bin_dir/kdct-native"
[ -x "$binary" ] || fail "the build produced no $binary"

# --- The binary must not need the toolchain ----------------------------------------------------------------------
needed=$(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[ -n "$needed" ] || fail "readelf found no NEEDED entries in $binary"
toolchain_libs=$(grep -E '^lib(swift|Foundation|_Foundation|dispatch|BlocksRuntime|icu|XCTest|Testing)' <<<"$needed" || true)
[ -z "$toolchain_libs" ] || fail "$binary still links toolchain libraries: $(echo $toolchain_libs)"
if readelf -d "$binary" | grep -qE '\((RPATH|RUNPATH)\)'; then
    fail "$binary has an RPATH/RUNPATH: $(readelf -d "$binary" | grep -E 'R(UN)?PATH')"
fi

# The CLI's own version (`kdct-native version X`, as qemu-img prints its own) must be VERSION's.
cli_version=$("$binary" --version) || fail "kdct-native --version failed"
[ "$cli_version" = "kdct-native version $version" ] \
    || fail "kdct-native --version says '$cli_version' but VERSION says '$version'"

# --- Stage the package tree --------------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/kdct-build-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/${package}_${version}_${arch}"
doc="$root/usr/share/doc/$package"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" "$doc"
# --strip-unneeded keeps .dynsym (the Swift runtime symbolicates with it); the debug info and .symtab go.
strip --strip-unneeded --remove-section=.comment --remove-section=.note -o "$root/usr/bin/$package" "$binary"
chmod 0755 "$root/usr/bin/$package"

"$bin_dir/generate-manual" "$binary" --date "$build_date" --section 1 -o "$work"
[ -s "$work/$package.1" ] || fail "generate-manual wrote no $package.1"
gzip -9n < "$work/$package.1" > "$root/usr/share/man/man1/$package.1.gz"

# Debian policy 12.3: documentation in /usr/share/doc/PACKAGE, compressed with gzip -9n; copyright uncompressed.
gzip -9n < README.md > "$doc/README.md.gz"
gzip -9n < FORMATS.md > "$doc/FORMATS.md.gz"
install -m 0644 packaging/copyright "$doc/copyright"
find "$root" -type d -exec chmod 0755 {} +
find "$root/usr/share" -type f -exec chmod 0644 {} +

# --- Depends, computed from the binary ---------------------------------------------------------------------------
# dpkg-shlibdeps wants debian/control in its working directory; it prints shlibs:Depends=... with the minimum
# versions from the libraries' symbols files.
install -d "$work/shlibdeps/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$package" "$package" > "$work/shlibdeps/debian/control"
depends=$(cd "$work/shlibdeps" && dpkg-shlibdeps -O -e"$root/usr/bin/$package" | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || fail "dpkg-shlibdeps computed no dependencies for $binary"

# Cross-check: each NEEDED library resolves (as ldd sees it) to a file owned by a package named in Depends.
depends_names=$(tr ',' '\n' <<<"$depends" | sed 's/^ *//; s/[ (:].*//')
while read -r library; do
    path=$(ldd "$binary" | awk -v lib="$library" '$1 == lib && $3 ~ /^\// { print $3; exit }
                                                     $1 ~ "/" lib "$" { print $1; exit }')
    [ -n "$path" ] || fail "NEEDED $library is not found by ldd"
    real=$(readlink -f "$path")
    owner=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$real" 2>/dev/null || dpkg -S "/usr$path" 2>/dev/null ||
            dpkg -S "${real#/usr}" 2>/dev/null) || fail "NEEDED $library ($path) belongs to no Debian package"
    owner=${owner%%:*}
    grep -qx "$owner" <<<"$depends_names" || fail "NEEDED $library comes from $owner, which is not in Depends: $depends"
done <<<"$needed"

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: $package
Version: $version
Architecture: $arch
Maintainer: ${KDCT_DEB_MAINTAINER:-KDCT-native developers <kdct-native@invalid>}
Installed-Size: $installed_size
Depends: $depends
Section: admin
Priority: optional
Description: convert VirtualBox, VMware and Hyper-V disks for KVM without qemu
 kdct-native reads the disk images other hypervisors write (VDI, VMDK in its
 subformats, VHD, VHDX, QCOW v1, QED, QCOW2, RAW) and OVA/OVF appliances, and
 writes RAW or QCOW2 for KVM, with qemu-img's command names and flags: info,
 convert, map, compare, check, checksum. It exports converted disks to the KVM
 host over SFTP (resumable, verified) and writes libvirt domains for
 appliances.
 .
 The Swift runtime is linked in: no Swift toolchain and no qemu are needed.
EOF
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# --- Build the .deb ----------------------------------------------------------------------------------------------
mkdir -p "$output_dir"
deb="$output_dir/${package}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"
echo "build-deb: binary $(stat -c %s "$binary") bytes, stripped $(stat -c %s "$root/usr/bin/$package") bytes"
echo "build-deb: Depends: $depends"
echo "build-deb: wrote $deb ($(stat -c %s "$deb") bytes)"
