// Shared helpers of the browser tests: launch Debian's chromium (never a
// downloaded browser) through playwright-core, record page errors (a CSP
// violation is a console error), and report steps so a failure says what
// failed. Run by tests/integration/test_browser.py.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const env = {
  base: process.env.WSGATE_HTTP,                 // http://127.0.0.1:PORT
  artifacts: process.env.WSGATE_ARTIFACTS || 'build/test-artifacts',
  chromium: process.env.WSGATE_CHROMIUM || '/usr/bin/chromium',
};

if (!env.base) {
  console.error('WSGATE_HTTP is not set');
  process.exit(2);
}
mkdirSync(env.artifacts, { recursive: true });

// Playwright gives every launch a fresh profile (user-data dir) in TMPDIR,
// which the pytest wrapper points at a per-test directory.
export async function launch() {
  return chromium.launch({
    executablePath: env.chromium,
    headless: true,
    timeout: 30000,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

const problems = [];

// A new page in ctx whose console errors and uncaught exceptions are
// recorded under `name`, except console errors matching a regexp of allow.
export async function watchedPage(ctx, name, allow = []) {
  const page = await ctx.newPage();
  page.setDefaultTimeout(8000);
  page.on('console', (m) => {
    if (m.type() === 'error' && !allow.some((re) => re.test(m.text()))) problems.push(`${name}: console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${name}: uncaught: ${e.message}`));
  return page;
}

export async function shot(page, file) {
  const p = path.join(env.artifacts, file);
  await page.screenshot({ path: p, fullPage: false });
  console.log(`screenshot ${p}`);
}

// Run the named steps in order; print each; exit 1 at the first failure
// (after a screenshot of every page for the post-mortem) or when pages
// logged errors.
export async function run(name, pages, steps, cleanup) {
  const t0 = Date.now();
  const overall = setTimeout(() => {
    console.error(`FAIL ${name}: timed out after 50 s`);
    process.exit(1);
  }, 50000);
  let failed = null;
  for (const [label, fn] of steps) {
    const t = Date.now();
    try {
      await fn();
      console.log(`ok   ${label} (${Date.now() - t} ms)`);
    } catch (e) {
      failed = `${label}: ${e.message.split('\n').slice(0, 6).join('\n')}`;
      console.error(`FAIL ${failed}`);
      for (const [pname, p] of Object.entries(pages())) {
        try { await shot(p, `failed-${name}-${pname}.png`); } catch (e2) { /* page gone */ }
      }
      break;
    }
  }
  if (!failed && problems.length) failed = 'page errors:\n  ' + problems.join('\n  ');
  try { await cleanup(); } catch (e) { /* already failing or done */ }
  clearTimeout(overall);
  if (failed) {
    console.error(`FAIL ${name}: ${failed}`);
    process.exit(1);
  }
  console.log(`PASS ${name} in ${Date.now() - t0} ms`);
}

// Wait until fn(arg) is truthy in the page.
export function until(page, fn, arg, timeout = 8000) {
  return page.waitForFunction(fn, arg, { timeout, polling: 50 });
}
