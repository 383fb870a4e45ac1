#!/usr/bin/env bash
# Install everything certbot-dane's demo, tests and benchmarks need on a fresh Debian 12 machine:
# Debian packages (BIND, Knot, PowerDNS with SQLite, Pebble, systemd for `systemd-analyze verify`)
# and a virtualenv in .venv holding this package (editable) with its test tools. Idempotent; needs
# root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(bind9 bind9-utils bind9-dnsutils knot pdns-server pdns-backend-sqlite3 pebble systemd iproute2 openssl faketime
          postfix unbound   # postfix ships posttls-finger; both only for tests/test_sender.py, on their own configs
          nginx             # the MTA-STS policy host of tests/test_mtasts_io.py and the demo, on its own config
          python3-dnspython python3-cryptography  # certbot-dane on Debian's Python: the TLSRPT pipe as nobody
          systemd-container mmdebstrap)  # tests/test_systemd_boot.py boots a Debian root with systemd as PID 1
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # Postfix unconfigured, and no daemon of these packages started (unbound, named would take port 53):
    # the tests run their own on loopback. A policy-rc.d made here is removed after the install.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod 755 "$policy"
        trap '$SUDO rm -f "$policy"' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$policy" ] || { $SUDO rm -f "$policy"; trap - EXIT; }
    for unit in postfix unbound nginx; do  # nor at boot
        [[ " ${missing[*]} " != *" $unit "* ]] || $SUDO systemctl disable --quiet "$unit.service" 2>/dev/null || true
    done
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import certbot_dane, certbot_dns_rfc2136, pytest, hypothesis" 2>/dev/null \
        || [ pyproject.toml -nt .venv/.installed ]; then
    echo "setup: installing certbot-dane and its test tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch .venv/.installed
fi
echo "setup: ready ($(.venv/bin/certbot --version 2>&1), $(/usr/sbin/named -v), $(dpkg-query -W -f='knot ${Version}' knot)," \
    "$(dpkg-query -W -f='pdns-server ${Version}' pdns-server), pebble $(dpkg-query -W -f='${Version}' pebble))"
