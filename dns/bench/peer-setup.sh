#!/usr/bin/env bash
# peer-setup.sh - install what the side-by-side DNS benchmark needs, once:
# dnsperf and dig (apt) and CoreDNS v1.15.0 (built with go install into
# $HOME/.cache/kubewire-peers/bin). Each step is skipped when its tool is
# already there. Needs root for apt-get. Changes nothing else.
set -euo pipefail

COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
PEER_BIN=${PEER_BIN:-$HOME/.cache/kubewire-peers/bin}

if ! command -v dnsperf >/dev/null 2>&1 || ! command -v dig >/dev/null 2>&1; then
  apt-get update
  apt-get install -y dnsperf dnsutils
fi

if [ ! -x "$PEER_BIN/coredns" ]; then
  mkdir -p "$PEER_BIN"
  GOBIN=$PEER_BIN go install "github.com/coredns/coredns@$COREDNS_VERSION"
fi

echo "dnsperf: $(command -v dnsperf) ($(dnsperf -h 2>&1 | awk '/^Version/ {print $2}'))"
echo "dig:     $(command -v dig)"
echo "coredns: $PEER_BIN/coredns ($("$PEER_BIN/coredns" -version 2>/dev/null | head -1))"
