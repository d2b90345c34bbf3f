#!/bin/sh
# Installs the devDependencies of sdk/js (typescript, esbuild, ws) from
# package-lock.json when node_modules is missing or was installed from
# another lock. `make test` runs it through `make js-deps`, before the Go
# tests: test/sdkjs_e2e_test.go builds the package and runs its tests.
#
# Node.js and npm come with the machine; where npm is missing and this is
# root with apt-get, Debian's nodejs and npm are installed first. Where it
# cannot install (not root, no network) it says so loudly and exits 0: the
# Go test then skips, naming what is missing, except under CI=true, where
# it fails. Nothing is downloaded when everything is in place.
set -u
cd "$(dirname "$0")" || exit 1

warn() { printf '\n*** js-deps: %s\n*** the TypeScript client test (TestSDKJS) will skip, or fail under CI=true\n\n' "$*" >&2; }

if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "js-deps: installing Debian's nodejs and npm" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt="apt-get -q -y -o DPkg::Lock::Timeout=300 --no-install-recommends"
	$apt install nodejs npm >&2 || { apt-get -q -o DPkg::Lock::Timeout=300 update >&2 && $apt install nodejs npm >&2; }
fi
if ! command -v npm >/dev/null 2>&1; then
	warn "npm is missing: install Node.js 20 or later with npm"
elif ! cmp -s package-lock.json node_modules/.installed-lock 2>/dev/null; then
	echo "js-deps: npm ci in sdk/js" >&2
	if npm ci --no-audit --no-fund --no-update-notifier --fetch-retries=1 --loglevel=error >&2; then
		cp package-lock.json node_modules/.installed-lock
	else
		warn "npm ci failed in sdk/js (no network?)"
	fi
fi
exit 0
