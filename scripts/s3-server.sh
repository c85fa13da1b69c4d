#!/usr/bin/env bash
# Make sure the S3-compatible test server `s3s-fs` is installed. The S3 tests in
# tests/it/store_conformance.rs start (and stop) it themselves on a free loopback
# port, with their own credentials and a temporary root, so installing it is
# all CI needs. Without it those tests fail unless VMIFS_SKIP_S3=1.
set -euo pipefail

VERSION=0.14.1

if command -v s3s-fs >/dev/null 2>&1; then
    echo "s3s-fs already installed: $(command -v s3s-fs) ($(s3s-fs --version 2>/dev/null || echo '?'))"
    exit 0
fi
bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
if [ -x "$bin" ]; then
    echo "s3s-fs already installed: $bin ($("$bin" --version 2>/dev/null || echo '?'))"
    exit 0
fi

echo "installing s3s-fs $VERSION" >&2
cargo install --locked "s3s-fs@$VERSION" --features binary
