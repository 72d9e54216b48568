#!/usr/bin/env bash
# Regenerates the committed Swift for proto/ (never run in CI; CI only checks the fingerprint).
#   1. protoc + protoc-gen-swift (swift-protobuf 1.39.0)  -> Shared/Contracts/Generated/*.pb.swift
#   2. scripts/generate-methods.py over protoc's descriptor set -> Methods.swift (one descriptor
#      per rpc, with its idempotency level) and the proto fingerprint that the tests check.
# Needs: protobuf-compiler (apt), python3 with the protobuf package (made in .venv if missing).
# The plugin is built once into .build-protoc (about a minute), or taken from $PROTOC_GEN_SWIFT.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=Shared/Contracts/Generated

command -v protoc >/dev/null || apt-get install -y protobuf-compiler
plugin=${PROTOC_GEN_SWIFT:-}
if [ -z "$plugin" ]; then
  scratch="$root/.build-protoc"
  mkdir -p "$scratch/pkg/Sources/dummy"
  cat >"$scratch/pkg/Package.swift" <<'PKG'
// swift-tools-version:6.0
import PackageDescription
let package = Package(name: "protoc-plugin",
  dependencies: [.package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0")],
  targets: [.executableTarget(name: "dummy", dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")])])
PKG
  echo 'print("")' >"$scratch/pkg/Sources/dummy/main.swift"
  (cd "$scratch/pkg" && swift build -c release --product protoc-gen-swift)
  plugin="$scratch/pkg/.build/release/protoc-gen-swift"
fi

python=${PYTHON:-"$root/.venv/bin/python"}
if ! "$python" -c 'import google.protobuf' 2>/dev/null; then
  python3 -m venv "$root/.venv" && "$root/.venv/bin/pip" install -q protobuf
  python="$root/.venv/bin/python"
fi

protos=$(cd proto && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
rm -f "$out"/*.pb.swift
(cd proto && protoc --plugin=protoc-gen-swift="$plugin" \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores \
  --swift_out="$root/$out" $protos)
(cd proto && protoc --include_imports --descriptor_set_out=/dev/stdout $protos) >"$root/.build-protoc.desc"
"$python" scripts/generate-methods.py "$root/.build-protoc.desc" proto "$out/Methods.swift"
rm -f "$root/.build-protoc.desc"
echo "generated: $(ls "$out" | tr '\n' ' ')"
