// Package test holds end-to-end tests: real gateway nodes on port 0 (and
// real gateway processes), driven through an independent WebSocket client
// (github.com/coder/websocket) and raw TCP, against a private Redis.
//
// Browser tests run pages in Debian's Chromium through playwright-core
// (test/browser: run.mjs, the pages, install.sh). browserRun opens pages in
// one Chromium and returns what each reported; browserServePages serves
// test/browser/pages from an origin of its own with hooks the pages can
// call; browserArtefact names a file to keep (a screenshot). A screenshot
// of a page is one call:
//
//	browserRun(t, browserPage{Name: "status", URL: adminURL(n) + "/status",
//		Wait: "load", Screenshot: browserArtefact(t, "status.png")})
//
// Without Chromium or playwright-core (`make browser-deps` installs them)
// browserRun skips the test, and fails it under CI=true.
package test
