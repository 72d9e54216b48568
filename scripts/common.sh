# Sourced by scripts/stack.sh and scripts/test.sh: Swift on PATH, and Debian packages
# installed when missing.
export PATH="/opt/swift/usr/bin:$PATH"
command -v swift >/dev/null || { echo "swift 6.3 is required (e.g. /opt/swift/usr/bin)" >&2; exit 1; }

# install_missing PKG…: apt-get installs those not installed yet (no recommends).
install_missing() {
  local need=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}
