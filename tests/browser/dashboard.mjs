// The dashboard: sign in with the management bearer key, then watch the
// connection count and the message rate move while the Python test runs a
// load client (it starts when this script prints READY), filter the
// connections by user and disconnect one. Exits non-zero on failure.
import { env, launch, watchedPage, shot, run, until } from './lib.mjs';

const key = process.env.WSGATE_MGMT_KEY;
const loadConns = Number(process.env.WSGATE_LOAD_CONNS || '5');
const browser = await launch();
const ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
// The wrong-key step makes the browser log the 403 it got.
const page = await watchedPage(ctx, 'dashboard', [/status of 403/]);

const value = (id) => page.locator('#' + id).textContent();

await run('dashboard', () => ({ page }), [
  ['a wrong key is refused', async () => {
    await page.goto(env.base + '/dashboard');
    await page.getByLabel('Management bearer key').fill('not-the-key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'refused' }).waitFor();
  }],
  ['sign in; the key is in sessionStorage only, never in the page', async () => {
    await page.getByLabel('Management bearer key').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#status.online').waitFor();
    await until(page, () => document.getElementById('v-conn').textContent === '0');
    const html = await page.content();
    if (html.includes(key)) throw new Error('the key appears in the page');
    const stored = await page.evaluate(() => [sessionStorage.getItem('wsgate.mgmtKey'),
      JSON.stringify(localStorage)]);
    if (stored[0] !== key || stored[1].includes(key)) throw new Error('key storage: ' + stored);
  }],
  ['the configuration is shown with secrets masked', async () => {
    const row = page.locator('#config-body tr', { hasText: 'management_bearer_key' });
    await row.waitFor();
    const t = await row.textContent();
    if (!t.includes('********')) throw new Error('not masked: ' + t);
    await page.locator('#config-body tr', { hasText: 'stage_name' }).waitFor();
  }],
  ['connections and message rate rise under load', async () => {
    console.log('READY');
    await until(page, (n) => Number(document.getElementById('v-conn').textContent) >= n, loadConns, 15000);
    await until(page, () => Number(document.getElementById('v-msg').textContent) > 5, null, 15000);
    await page.locator('#rooms-body tr', { hasText: '#loadroom' }).waitFor();
    // the local engine's one node, with this load's connections
    const node = page.locator('#nodes-body tr', { hasText: 'local (this node)' });
    await node.waitFor();
    await until(page, (n) => {
      const row = [...document.querySelectorAll('#nodes-body tr')][0];
      return row && Number(row.children[2].textContent) >= n;
    }, loadConns, 15000);
    const lat = await value('v-lat');
    if (!/ms/.test(lat)) throw new Error('no latency estimate: ' + lat);
    console.log(`seen: connections=${await value('v-conn')} msg/s=${await value('v-msg')} latency=${lat}`);
  }],
  ['filter the connections of one user and disconnect it', async () => {
    await page.getByLabel('Filter by user').fill('loaduser-1');
    await until(page, () => document.querySelectorAll('#conns-body tr[data-user]').length === 1);
    const user = await page.locator('#conns-body tr[data-user]').getAttribute('data-user');
    if (user !== 'loaduser-1') throw new Error('filtered to ' + user);
    await page.getByRole('button', { name: /^Disconnect loaduser-1/ }).click();
    await until(page, () => document.querySelectorAll('#conns-body tr[data-user]').length === 0);
    await page.getByLabel('Filter by user').fill('');
  }],
  ['screenshot with a few seconds of history', async () => {
    await page.waitForTimeout(2500);
    await shot(page, 'dashboard.png');
    await page.screenshot({ path: env.artifacts + '/dashboard-full.png', fullPage: true });
    console.log('screenshot ' + env.artifacts + '/dashboard-full.png');
  }],
], async () => {
  await ctx.close();
  await browser.close();
  console.log('DONE');
});
