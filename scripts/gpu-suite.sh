#!/usr/bin/env bash
# Ready the GPU check: copy the four Fashion-MNIST files into data/fashion-mnist/ (git-ignored, ~30 MB),
# the folder to carry to the GPU machine with the working tree. Then run there, from the repository root:
#   python3 -m bench.benchmark --suite gpu --data-dir data/fashion-mnist --out "$OUT"
# (no install needed; MLflow and Optuna are not used). Commit the returned gpu-<device>.md/.json/-curves.png
# into results/.
set -euo pipefail
cd "$(dirname "$0")/.."

source="${1:-/usr/share/datasets/fashion-mnist}"
target=data/fashion-mnist
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
for name in "${files[@]}"; do
    if [ ! -f "$source/$name" ]; then
        echo "error: $source/$name not found: apt-get install dataset-fashion-mnist, or pass the folder holding the .gz files" >&2
        exit 2
    fi
done
mkdir -p "$target"
for name in "${files[@]}"; do
    cp "$source/$name" "$target/$name"
done
echo "copied ${#files[@]} files into $target ($(du -sh "$target" | cut -f1)); carry that folder and run:" >&2
echo "python3 -m bench.benchmark --suite gpu --data-dir $target --out \"\$OUT\""
