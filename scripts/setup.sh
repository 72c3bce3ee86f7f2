#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: .venv with the pinned torch, the project, the dataset.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# torch first and pinned: an unpinned resolve can pull a multi-GB CUDA build from the registry.
.venv/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev,postgres,export,dashboard,peers]'

# Real data offline: Debian packages the full Fashion-MNIST.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get install -y -qq dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }) >/dev/null
    else
        echo "note: Fashion-MNIST not installed; run 'sudo apt-get install dataset-fashion-mnist' or let bench download it" >&2
    fi
fi
