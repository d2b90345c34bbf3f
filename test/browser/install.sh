#!/bin/sh
# Installs what test/browser_e2e_test.go needs: Debian's chromium (when
# /usr/bin/chromium, or $GATEWAY_CHROMIUM, is missing) and playwright-core
# from package-lock.json (when node_modules is missing or was installed from
# another lock). `make test` runs it through `make browser-deps`.
#
# Where it cannot install (not root, no apt-get, no node/npm, no network) it
# says so loudly and exits 0: the Go test then skips, naming what is
# missing, except under CI=true, where the Go test fails. Nothing is
# downloaded when everything is in place, so a second run costs nothing.
set -u
cd "$(dirname "$0")" || exit 1

warn() { printf '\n*** browser-deps: %s\n*** the Chromium test (TestBrowser) will skip, or fail under CI=true\n\n' "$*" >&2; }

chromium=${GATEWAY_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
	if [ "$(id -u)" != 0 ]; then
		warn "$chromium is missing and this is not root: install it with 'apt-get install chromium' as root"
	elif ! command -v apt-get >/dev/null 2>&1; then
		warn "$chromium is missing and there is no apt-get: install Chromium and set GATEWAY_CHROMIUM to it"
	else
		echo "browser-deps: installing Debian's chromium" >&2
		export DEBIAN_FRONTEND=noninteractive
		# Wait for another apt (a parallel install) rather than fail.
		apt="apt-get -q -y -o DPkg::Lock::Timeout=300 --no-install-recommends"
		# Refresh the package lists only when they do not know chromium,
		# or when installing from them fails (stale lists give 404s).
		if ! apt-cache show chromium >/dev/null 2>&1; then
			apt-get -q -o DPkg::Lock::Timeout=300 update >&2
		fi
		if ! $apt install chromium >&2; then
			apt-get -q -o DPkg::Lock::Timeout=300 update >&2 && $apt install chromium >&2
		fi
		[ -x "$chromium" ] || warn "could not install chromium (no network?)"
	fi
fi

# playwright-core drives the system Chromium: it never downloads a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if ! command -v npm >/dev/null 2>&1; then
	warn "npm is missing: install Node.js 20 or later"
elif ! cmp -s package-lock.json node_modules/.installed-lock 2>/dev/null; then
	echo "browser-deps: npm ci in test/browser" >&2
	if npm ci --no-audit --no-fund --no-update-notifier --fetch-retries=1 --loglevel=error >&2; then
		cp package-lock.json node_modules/.installed-lock
	else
		warn "npm ci failed in test/browser (no network?)"
	fi
fi
exit 0
