#!/usr/bin/env bash
# Installs the real XMPP servers used as federation peers by the tests
# (tests/peers/): prosody + lua-unbound, ejabberd, and dnsmasq-base (binary
# only, no system resolver). Idempotent and quick when all is present.
#
# Package post-install scripts would start the system prosody/ejabberd/epmd,
# which bind *:5222/5269/5280/4369 and steal the loopback ports the tests use,
# so a policy-rc.d that forbids starting services is in place for the install
# (removed afterwards only if we created it), and anything the system started
# anyway is stopped afterwards. Must run as root (CI), no stdin.
set -euo pipefail

packages=(prosody lua-unbound ejabberd dnsmasq-base)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-peers: need root to install ${missing[*]}" >&2
        exit 1
    fi
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    remove_policy() {
        if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    }
    trap remove_policy EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${packages[@]}" </dev/null >/dev/null
    remove_policy
    trap - EXIT
fi

# Stop any system instance, whatever started it. Only by service manager or by
# the exact pid recorded in the service's own pidfile; never by name.
stop_service() {
    local svc=$1
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl stop "$svc" >/dev/null 2>&1 || true
        systemctl disable "$svc" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$svc ]]; then
        if command -v invoke-rc.d >/dev/null && [[ ! -e /usr/sbin/policy-rc.d ]]; then
            invoke-rc.d "$svc" stop >/dev/null 2>&1 || true
        else
            "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        fi
    fi
}
kill_pidfile() {
    local f=$1 pid
    [[ -r $f ]] || return 0
    pid=$(tr -dc '0-9' <"$f")
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || return 0
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
}
stop_service prosody
stop_service ejabberd
kill_pidfile /run/prosody/prosody.pid
kill_pidfile /var/run/prosody/prosody.pid
kill_pidfile /run/ejabberd/ejabberd.pid
kill_pidfile /var/run/ejabberd/ejabberd.pid

# The system ejabberd's epmd (port 4369) is started by the Erlang VM, not by a
# service with a pidfile. Ask it to exit through its own protocol, and only
# when no Erlang node is registered with it (as ejabberdctl itself does), so
# no running node of anyone else is affected. The test peers use no epmd.
if command -v epmd >/dev/null && names=$(epmd -names 2>/dev/null); then
    if ! grep -q '^name ' <<<"$names"; then
        epmd -kill >/dev/null 2>&1 || true
    fi
fi

# Report anything still bound to the XMPP ports (another user's server, say).
if command -v ss >/dev/null; then
    busy=$(ss -Hltn '( sport = :5222 or sport = :5269 or sport = :5280 )' 2>/dev/null || true)
    if [[ -n $busy ]]; then
        echo "install-peers: warning: something still listens on an XMPP port:" >&2
        echo "$busy" >&2
    fi
fi
