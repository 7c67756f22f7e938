#!/bin/sh
# Installs what tests/browser/ drives: Debian's `chromium` and `chromium-driver` (chromedriver),
# which Debian ships at the same version. Idempotent; called by .ci/run, usable by hand:
#
#     .ci/install-browser.sh        # as root, or as a user with sudo
#
# Afterwards `cargo test --test browser` runs the page in headless Chromium.
set -eu

# Prints both versions and fails unless their major versions agree (chromedriver refuses to
# drive a browser of another major version).
check_versions() {
    # Debian's chromium wrapper prints a harmless shell warning on stderr; keep the output clean.
    browser=$(chromium --version 2>/dev/null)
    driver=$(chromedriver --version 2>/dev/null)
    echo "chromium:     $browser"
    echo "chromedriver: $driver"
    browser_major=$(echo "$browser" | sed -n 's/^Chromium \([0-9]*\)\..*/\1/p')
    driver_major=$(echo "$driver" | sed -n 's/^ChromeDriver \([0-9]*\)\..*/\1/p')
    if [ -z "$browser_major" ] || [ "$browser_major" != "$driver_major" ]; then
        echo "install-browser: chromium ($browser_major) and chromedriver ($driver_major) differ" >&2
        exit 1
    fi
}

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "install-browser: already installed"
    check_versions
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium chromium-driver

check_versions
