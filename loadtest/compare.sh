#!/usr/bin/env bash
# Side-by-side comparison: fedrouter, Prosody and ejabberd on loopback under
# the same loadtest scenarios, one table with the ratios at the end.
#
# Installs the peer servers (tests/install-peers.sh: Debian's prosody,
# ejabberd, dnsmasq-base, without starting their system services), builds the
# release binaries, then hands over to the driver (loadtest/src/bin/compare),
# which starts each server in turn, provisions the users through the server's
# own tool, runs the scenarios and stops it again. Must run as root (the
# servers run as their own system users; ejabberd in a private mount
# namespace). Everything stays on 127.0.0.0/8.
#
# Arguments go to the driver (`compare --help`), e.g.
#   loadtest/compare.sh --scenarios im --im-messages 100000
#   loadtest/compare.sh --servers fedrouter,ejabberd
#   loadtest/compare.sh --check        # only start, sign in, DNS + s2s
# Sizes can also come from the environment (COMPARE_IM_MESSAGES=…, see --help).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "compare.sh: must run as root (the peer servers run as their own users)" >&2
    exit 1
fi
if ! command -v cargo >/dev/null; then
    echo "compare.sh: cargo is required (https://rustup.rs)" >&2
    exit 1
fi

bash tests/install-peers.sh
cargo build --release --locked -p fedrouter -p loadtest

# exec: a Ctrl-C reaches the driver, which stops every server it started.
exec target/release/compare "$@"
