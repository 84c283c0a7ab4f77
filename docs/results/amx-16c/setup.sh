# How the 16-core AMX host (offline, lent for minutes) was prepared for the ladder in this
# folder: sourced from the repo root there, with .dev/ carried in from the dev machine:
#   .dev/whl/  diffusers-0.42.1 and importlib_metadata-10.2.0 wheels (pip download)
#   .dev/deb/  libjemalloc2, numactl, libnuma1 (apt-get download, Debian 12)
#   .dev/lib/  libiomp5.so, unzipped from the intel-openmp 2026.2.0 wheel
# Then: $SD model create --preset sd15 /tmp/sd15
#       $SD ladder --model /tmp/sd15 --rounds 3 --no-compile --out-dir $OUT
#       $SD exec -- python3 -m sdagent bench --model /tmp/sd15 --steps 4 --height 256 \
#           --width 256 --runs 3 --warmup 1 --compile --compile-cache /tmp/ind
set -u
if [ ! -e /tmp/site/diffusers ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .dev/whl/*.whl || exit 1
  for f in .dev/deb/*.deb; do dpkg -x "$f" /; done
  install -m 0755 .dev/lib/libiomp5.so /usr/local/lib/libiomp5.so
  # run_cpu --enable-jemalloc looks for an unversioned libjemalloc.so in /usr/local/lib (among others)
  ln -sf /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/local/lib/libjemalloc.so
  ldconfig
fi
export PYTHONPATH=$PWD/agent:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
SD="python3 -m sdagent"
