// The chat page, with three browsers (contexts) on one server: chat across
// a room switch, room list counts, a private message seen only by its
// target, typing indicators, a readable error. Exits non-zero on failure.
import { env, launch, watchedPage, shot, run, until } from './lib.mjs';

const browser = await launch();
const desktop = { viewport: { width: 1200, height: 760 } };
const phone = { viewport: { width: 390, height: 760 }, isMobile: true, hasTouch: true };
const ctxA = await browser.newContext(desktop);
const ctxB = await browser.newContext(phone);
const ctxC = await browser.newContext(desktop);
const alice = await watchedPage(ctxA, 'alice');
const bob = await watchedPage(ctxB, 'bob');
const carol = await watchedPage(ctxC, 'carol');

async function join(page, name, room) {
  await page.goto(env.base + '/');
  await page.getByLabel('Your name', { exact: true }).fill(name);
  await page.getByLabel('Room', { exact: true }).fill(room);
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.locator('#status.online').waitFor();
  await until(page, (r) => document.getElementById('room-title').textContent === '#' + r, room);
}

async function say(page, text) {
  const box = page.getByRole('textbox', { name: 'Message' });
  await box.fill(text);
  await box.press('Enter');
}

function sees(page, text) {
  return page.locator('#messages .msg .text', { hasText: text }).first().waitFor();
}

async function neverSees(page, text) {
  const n = await page.locator('#messages', { hasText: text }).count();
  if (n !== 0) throw new Error(`saw "${text}" but must not`);
}

async function switchRoom(page, room) {
  await page.getByLabel('Join or create a room').fill(room);
  await page.getByLabel('Join or create a room').press('Enter');
  await until(page, (r) => document.getElementById('room-title').textContent === '#' + r, room);
}

function roomCount(page, room, n) {
  return until(page, ([r, k]) => {
    const b = document.querySelector(`#rooms button[data-room="${r}"] .count`);
    return b && b.textContent === String(k);
  }, [room, n]);
}

await run('chat', () => ({ alice, bob, carol }), [
  ['the page loads with its CSP and learns the stage', async () => {
    const r = await alice.goto(env.base + '/');
    const csp = r.headers()['content-security-policy'] || '';
    if (!csp.includes("default-src 'self'")) throw new Error('no CSP: ' + csp);
    await shot(alice, 'chat-join.png');
  }],
  ['alice, bob and carol connect to #lobby', async () => {
    await join(alice, 'alice', 'lobby');
    await join(bob, 'bob', 'lobby');
    await join(carol, 'carol', 'lobby');
    await alice.locator('#messages .msg.system', { hasText: 'carol joined #lobby' }).waitFor();
    await roomCount(alice, 'lobby', 3);
  }],
  ['alice and bob chat in #lobby', async () => {
    await say(alice, 'hello from alice');
    await sees(bob, 'hello from alice');
    await sees(carol, 'hello from alice');
    await say(bob, 'hi alice, bob here');
    await sees(alice, 'hi alice, bob here');
  }],
  ['alice and bob switch to #garden; the room list follows', async () => {
    await switchRoom(alice, 'garden');
    await bob.locator('#messages .msg.system', { hasText: 'alice left #lobby' }).waitFor();
    await switchRoom(bob, 'garden');
    await alice.locator('#messages .msg.system', { hasText: 'bob joined #garden' }).waitFor();
    await roomCount(carol, 'garden', 2);
    await roomCount(carol, 'lobby', 1);
    const current = await alice.locator('#rooms button[aria-current="true"]').textContent();
    if (!current.includes('garden')) throw new Error('current room not marked: ' + current);
  }],
  ['they keep chatting in #garden; carol (in #lobby) does not see it', async () => {
    await say(bob, 'the roses are out');
    await sees(alice, 'the roses are out');
    await say(alice, 'lovely, bob');
    await sees(bob, 'lovely, bob');
    await carol.waitForTimeout(300);
    await neverSees(carol, 'the roses are out');
  }],
  ['carol switching to #garden sees its history, each message once', async () => {
    await switchRoom(carol, 'garden');
    await sees(carol, 'the roses are out');
    await sees(carol, 'lovely, bob');
    const n = await carol.locator('#messages .msg .text', { hasText: 'the roses are out' }).count();
    if (n !== 1) throw new Error('history message shown ' + n + ' times');
    await switchRoom(carol, 'lobby');
  }],
  ['a private message reaches only its target', async () => {
    await carol.getByLabel('Private to').fill('bob');
    await say(carol, 'psst bob, a secret');
    await bob.locator('#messages .msg.private .text', { hasText: 'psst bob, a secret' }).waitFor();
    await alice.waitForTimeout(500);
    await neverSees(alice, 'psst bob, a secret');
    await carol.locator('#messages .msg.private', { hasText: 'private to bob' }).waitFor();
  }],
  ['a private message to nobody shows a readable error', async () => {
    await carol.getByLabel('Private to').fill('nobody-here');
    await say(carol, 'anyone?');
    await until(carol, () => document.getElementById('error-text').textContent.includes('Target user not found or offline'));
    if (!(await carol.getByRole('alert').filter({ hasText: 'Target user not found' }).isVisible()))
      throw new Error('error alert not visible');
    await carol.getByRole('button', { name: 'Clear' }).click();
  }],
  ['typing shows and clears', async () => {
    const box = alice.getByRole('textbox', { name: 'Message' });
    await box.click();
    await alice.keyboard.type('I am wri', { delay: 20 });
    await until(bob, () => document.getElementById('typing').textContent === 'alice is typing…');
    await box.fill('');
    await until(bob, () => document.getElementById('typing').textContent === '');
    await alice.keyboard.type('and again', { delay: 10 });
    await until(bob, () => document.getElementById('typing').textContent === 'alice is typing…');
    await box.press('Enter');
    await until(bob, () => document.getElementById('typing').textContent === '');
    await sees(bob, 'and again');
  }],
  ['screenshots', async () => {
    await alice.getByRole('textbox', { name: 'Message' }).fill('');
    await bob.getByRole('textbox', { name: 'Message' }).click();
    await bob.keyboard.type('typing to alice', { delay: 5 });
    await until(alice, () => document.getElementById('typing').textContent === 'bob is typing…');
    await shot(alice, 'chat-alice.png');
    await shot(bob, 'chat-bob-phone.png');
    await shot(carol, 'chat-carol.png');
  }],
], async () => {
  await ctxA.close();
  await ctxB.close();
  await ctxC.close();
  await browser.close();
});
