# Shared by scripts/images, scripts/repro and bench/images (sourced, not run).

# Debian architecture name -> Rust target triple.
declare -A hb_rust_target=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
# The architectures every image is built for; the first one is the e2e cluster's.
hb_arches=(amd64 arm64)

# The OCI archive of one image and architecture. amd64 keeps the name the e2e cluster imports.
hb_archive() { # name arch
    if [[ $2 == amd64 ]]; then echo "target/images/$1.oci.tar"; else echo "target/images/$1.$2.oci.tar"; fi
}

# Release builds that do not depend on where the checkout or the cargo registry lie: both paths are
# rewritten in panic locations and whatever else rustc embeds. Computed here, never committed.
hb_reproducible_env() {
    local cargo_home=${CARGO_HOME:-$HOME/.cargo} flags arch var
    flags="--remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$PWD=/build"
    for arch in "${hb_arches[@]}"; do
        var=CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"${hb_rust_target[$arch]}")_RUSTFLAGS
        export "$var=$flags"
    done
    export SOURCE_DATE_EPOCH=0
}

# Bytes of the unpacked root filesystem of a single-image OCI archive: its layers, uncompressed.
hb_unpacked_bytes() { # archive
    local work manifest layer size total=0
    work=$(mktemp -d)
    tar -xf "$1" -C "$work"
    manifest=$work/blobs/$(jq -r '.manifests[0].digest | sub(":"; "/")' "$work/index.json")
    for layer in $(jq -r '.layers[].digest | sub(":"; "/")' "$manifest"); do
        size=$(gzip -dc "$work/blobs/$layer" 2>/dev/null | wc -c || true)
        [[ $size -gt 0 ]] || size=$(wc -c <"$work/blobs/$layer")
        total=$((total + size))
    done
    rm -rf "$work"
    echo "$total"
}
