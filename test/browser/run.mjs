// run.mjs drives Debian's Chromium through playwright-core for
// test/browser_e2e_test.go (see browserRun there). One browser launch, every
// page in a tab of its own (one fresh profile), all at once.
//
//   node run.mjs '<spec>'
//
// spec (JSON): {"chromium": "/usr/bin/chromium", "timeout_ms": 20000,
//   "pages": [{"name": "native", "url": "http://127.0.0.1:1234/native.html?...",
//              "wait": "result" | "load", "screenshot": "/abs/path.png"}]}
//
// "result" (the default) waits until the page sets window.testResult (the
// test pages do, through lib.js); "load" waits for the load event and no
// network activity, for pages that are only looked at (their result is
// {url, title, text}: the address after redirects and the rendered text). "screenshot", when
// set, saves a full-page PNG after the wait.
//
// Output: one JSON line per page on stdout, as each finishes:
//   {"page": name, "result": <window.testResult or null>, "error": "" | why
//    the runner could not get a result, "console": [lines the page logged,
//    page errors and failed requests], "ms": <time from the page's open>}
// then {"done": true, "launch_ms": <Chromium's start>, "ms": <wall time>}.
// The exit status is 0 whenever every page was visited; the Go test judges
// the results.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const started = Date.now();
const spec = JSON.parse(process.argv[2] ?? '{}');
const timeout = spec.timeout_ms ?? 20000;
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

// The flags Chromium needs on a machine with a closed network: without the
// background-networking ones it keeps dialing Google's hosts. A fresh
// profile every run, removed at the end.
const profile = mkdtempSync(join(tmpdir(), 'gateway-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: spec.chromium ?? '/usr/bin/chromium',
  headless: true,
  timeout,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const launched = Date.now();

async function visit(p) {
  const opened = Date.now();
  const out = { page: p.name, result: null, error: '', console: [], ms: 0 };
  const page = await browser.newPage();
  page.on('console', (m) => out.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => out.console.push(`requestfailed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  try {
    await page.goto(p.url, { timeout, waitUntil: p.wait === 'load' ? 'networkidle' : 'load' });
    if (p.wait !== 'load') {
      await page.waitForFunction(() => window.testResult !== undefined, null, { timeout, polling: 50 });
      out.result = await page.evaluate(() => window.testResult);
    } else {
      // What a reader sees, for pages that run no script of their own.
      out.result = await page.evaluate(() => ({ url: location.href, title: document.title, text: document.body.innerText }));
    }
    if (p.screenshot) await page.screenshot({ path: p.screenshot, fullPage: true });
  } catch (e) {
    out.error = String(e?.message ?? e);
    if (p.wait !== 'load') out.result = await page.evaluate(() => window.testResult ?? null).catch(() => null);
  }
  await page.close().catch(() => {});
  out.ms = Date.now() - opened;
  emit(out);
}

try {
  await Promise.all((spec.pages ?? []).map(visit));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
emit({ done: true, launch_ms: launched - started, ms: Date.now() - started });
