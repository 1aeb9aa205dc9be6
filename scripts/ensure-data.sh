#!/usr/bin/env bash
# Make sure Fashion-MNIST (Debian package dataset-fashion-mnist) is installed. Nothing is downloaded
# at run time by onceforall itself; this is the one install step for the embedded default data.
set -euo pipefail
dir="${ONCEFORALL_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
if [ -f "$dir/train-images-idx3-ubyte.gz" ] && [ -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
echo "Fashion-MNIST not found under $dir; installing the Debian package dataset-fashion-mnist" >&2
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "error: installing dataset-fashion-mnist needs root; run: sudo apt-get install -y dataset-fashion-mnist" >&2
  echo "       (or point ONCEFORALL_FASHION_MNIST at a folder with the four IDX .gz files)" >&2
  exit 1
fi
if [ ! -f "$dir/train-images-idx3-ubyte.gz" ]; then
  echo "error: dataset-fashion-mnist installed but $dir/train-images-idx3-ubyte.gz is missing" >&2
  exit 1
fi
