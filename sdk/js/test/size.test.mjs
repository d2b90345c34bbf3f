// The size budget: the package bundled (src/index.ts, everything it
// exports), minified and gzipped, stays under 8 KB. README.md states the
// figure this prints.
import { test } from "node:test";
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

export const BUDGET = 8 * 1024;

test("bundle size: minified and gzipped under 8 KB", async () => {
  const out = await build({
    entryPoints: [new URL("../src/index.ts", import.meta.url).pathname],
    bundle: true, minify: true, format: "esm", target: "es2020", write: false, logLevel: "silent",
  });
  const js = out.outputFiles[0].contents;
  const gz = gzipSync(js, { level: 9 }).length;
  console.log(`bundle: ${js.length} bytes minified, ${gz} bytes gzipped (budget ${BUDGET})`);
  assert.ok(gz < BUDGET, `${gz} bytes gzipped, budget ${BUDGET}`);
  // A bundle that lost its code would pass the budget too.
  assert.ok(js.length > 2000 && new TextDecoder().decode(js).includes("GatewayClient"));
});
