#!/usr/bin/env bash
# Installs what this project needs on a fresh Debian machine (as root): nats-server (JetStream for the
# demo and the tests), openssl (TLS tests), chromium (console browser tests), mosquitto (a benchmark
# peer; its service is not started), mosquitto-clients (third-party MQTT clients in the tests) and
# prometheus (for promtool: the alert rules' checks), then `npm ci`, which
# also generates the protobuf code. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
[ -x /usr/bin/chromium ] || [ "${SKIP_BROWSER:-}" = 1 ] || need_apt+=(chromium)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)   # a peer in `npm run bench -- ingest`
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)   # third-party MQTT 3.1.1 and 5 clients in the protocol tests
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)   # promtool checks and unit-tests deploy/grafana's alert rules (the tests need no Prometheus server)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then echo "setup: need root for apt-get (or install: ${need_apt[*]})" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi
npm ci --no-audit --no-fund
