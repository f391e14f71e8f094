// The chat page in a real browser: playwright-core drives Debian's chromium (headless) against a
// running `sprout serve`, through each domain as a person would, and saves a screenshot per step.
//
//   SPROUT_URL=http://127.0.0.1:19300 SPROUT_API_KEY=test-key node tests/browser/chat.mjs
//
// Environment: SPROUT_URL (required), SPROUT_API_KEY (the server's --api-key, if any),
// SPROUT_BOOKS_CATALOG (default ../shared/data/books/library_books_title_author.json from the
// repo root), SPROUT_BROWSER_OUT (default out/browser), CHROMIUM (default /usr/bin/chromium),
// SPROUT_ANSWER_TIMEOUT_MS (one answer, default 180000: the model runs on a few CPU cores).
// Every step runs even after another failed (so one broken domain does not hide the others);
// the exit status is 1 when any failed.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const base = (process.env.SPROUT_URL || '').replace(/\/+$/, '');
const apiKey = process.env.SPROUT_API_KEY || '';
const booksCatalog = process.env.SPROUT_BOOKS_CATALOG
  || path.resolve(repo, '..', 'shared', 'data', 'books', 'library_books_title_author.json');
const outDir = path.resolve(repo, process.env.SPROUT_BROWSER_OUT || 'out/browser');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const answerMs = Number(process.env.SPROUT_ANSWER_TIMEOUT_MS || 180000);

if (!base) {
  console.error('chat.mjs: set SPROUT_URL to a running `sprout serve` (e.g. http://127.0.0.1:19300)');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

class Failure extends Error {}
const check = (ok, message) => {
  if (!ok) throw new Failure(message);
};

// ------------------------------------------------------------------ reference data
async function ecoTitles() {
  const headers = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  const res = await fetch(`${base}/v1/catalogs/eco/items?limit=1000`, { headers });
  check(res.ok, `GET /v1/catalogs/eco/items answered ${res.status}`);
  const body = await res.json();
  check(Array.isArray(body.items) && body.items.length > 0, 'the eco catalog lists no items');
  const titles = new Set();
  for (const item of body.items) {
    titles.add(item.title);
    for (const tr of Object.values(item.translations || {})) if (tr && tr.title) titles.add(tr.title);
  }
  return titles;
}

function bookTitles() {
  const list = JSON.parse(fs.readFileSync(booksCatalog, 'utf8'));
  check(Array.isArray(list) && list.length > 0, `${booksCatalog} holds no books`);
  return new Set(list.map((b) => String(b.title).trim()));
}

// ------------------------------------------------------------------ page helpers
const lastBot = (page) => page.locator('#log .msg.bot').last();

// Waits until the newest bot message streams text (seen while still streaming), then ends.
// Returns {state, text, cards, streamedSeen}.
async function waitAnswer(page, botCountBefore, { needStreaming = true, streamingShot = '' } = {}) {
  await page.waitForFunction((n) => document.querySelectorAll('#log .msg.bot').length > n,
    botCountBefore, { timeout: 30000 });
  let streamedSeen = false;
  if (needStreaming) {
    try {
      await page.waitForFunction(() => {
        if (document.querySelector('#key-dialog').open) return 'key';
        const m = [...document.querySelectorAll('#log .msg.bot')].pop();
        if (!m) return false;
        if (m.dataset.state !== 'streaming') return 'over';
        const text = m.querySelector('.bubble-text').textContent.trim();
        return m.querySelector('.bubble').getAttribute('aria-busy') === 'true' && text.length >= 2 && !text.endsWith('…') ? 'seen' : false;
      }, null, { timeout: answerMs, polling: 50 }).then(async (h) => {
        const seen = await h.jsonValue();
        if (seen === 'key') throw new Failure('the page asks for the API key (again): the server refused it');
        streamedSeen = seen === 'seen';
      });
      if (streamedSeen && streamingShot) {
        // Best effort: a little more text makes a clearer picture of the stream.
        await page.waitForFunction(() => {
          const m = [...document.querySelectorAll('#log .msg.bot')].pop();
          return m.dataset.state !== 'streaming' || m.querySelector('.bubble-text').textContent.length >= 40;
        }, null, { timeout: 3000, polling: 50 }).catch(() => {});
        await shot(page, streamingShot);
      }
    } catch (e) {
      if (e instanceof Failure) throw e;
      throw new Failure(`no streamed text appeared within ${answerMs} ms (${e.message.split('\n')[0]})`);
    }
  }
  await page.waitForFunction(() => {
    const m = [...document.querySelectorAll('#log .msg.bot')].pop();
    return m && m.dataset.state !== 'streaming';
  }, null, { timeout: answerMs, polling: 100 }).catch(() => {
    throw new Failure(`the answer did not finish within ${answerMs} ms`);
  });
  const m = lastBot(page);
  return {
    state: await m.getAttribute('data-state'),
    kind: await m.getAttribute('class'),
    text: (await m.locator('.bubble-text').first().textContent()).trim(),
    detail: (await m.locator('.detail').allTextContents()).join(' '),
    cards: (await m.locator('.card .card-title').allTextContents()).map((s) => s.replace(/^\s*\d+\.\s*/, '').trim()),
    streamedSeen,
  };
}

const botCount = (page) => page.locator('#log .msg.bot').count();

async function send(page, text) {
  const input = page.locator('#composer-input');
  await input.click();
  await input.fill(text);
  await input.press('Enter');
}

// ------------------------------------------------------------------ steps
const results = [];
async function step(name, page, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true, ms: Date.now() - started });
    console.log(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    const shot = path.join(outDir, `FAIL-${name}.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    // Playwright's messages carry a long call log: its first lines say what went wrong.
    const message = e instanceof Failure ? e.message : String(e.message || e).split('\n').slice(0, 4).join('\n     ');
    results.push({ name, ok: false, ms: Date.now() - started, error: message.split('\n')[0] });
    console.log(`FAIL ${name}: ${message}\n     screenshot: ${path.relative(repo, shot)}`);
    // A key dialog left open by the failure would block the next steps' clicks.
    await page.evaluate(() => { const d = document.querySelector('#key-dialog'); if (d && d.open) d.close(); }).catch(() => {});
  }
}
const shot = (page, name) => page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sprout-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run'],
  viewport: { width: 1280, height: 900 },
  locale: 'ko-KR',
});
context.setDefaultTimeout(60000);
const page = context.pages()[0] || await context.newPage();
const jsErrors = [];
page.on('pageerror', (e) => jsErrors.push(e.message));
// Console errors count too (a Content-Security-Policy refusal lands there), except the browser's
// note about a non-2xx response, which the page handles (the 401 that asks for the key).
page.on('console', (m) => {
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) jsErrors.push(m.text());
});
const requests = [];
page.on('request', (r) => requests.push({ url: r.url(), auth: r.headers().authorization || '' }));

let ecoCatalog = null;
let ecoCardsSeen = [];
let freeTextUser = '';

await step('load', page, async () => {
  const res = await page.goto(`${base}/`, { waitUntil: 'load' });
  check(res && res.status() === 200, `GET / answered ${res && res.status()}`);
  check((res.headers()['content-type'] || '').startsWith('text/html'), `GET / is ${res.headers()['content-type']}`);
  check(await page.title() === 'sprout', `the page title is ${await page.title()}`);
  for (const asset of ['/assets/app.js', '/assets/app.css']) {
    const r = await page.request.get(`${base}${asset}`);
    check(r.status() === 200 && !!r.headers().etag, `${asset}: ${r.status()}, ETag ${r.headers().etag}`);
  }
  check(await page.locator('.domain[data-domain="eco"]').getAttribute('aria-pressed') === 'true',
    'eco is not the default domain');
  check(jsErrors.length === 0, `script errors: ${jsErrors.join('; ')}`);
  await shot(page, '01-load');
});

await step('eco-keywords', page, async () => {
  ecoCatalog = await ecoTitles();
  for (const [field, label] of [['location', '도시'], ['workType', '사무직'], ['category', '제로웨이스트']]) {
    const chip = page.locator(`.chips[data-field="${field}"] button`, { hasText: label });
    check(await chip.count() === 1, `no "${label}" button for ${field}`);
    await chip.click();
    check(await chip.getAttribute('aria-pressed') === 'true', `"${label}" did not toggle on`);
  }
  const before = await botCount(page);
  await page.locator('#eco-send').click();
  const a = await waitAnswer(page, before, { streamingShot: '02-eco-streaming' });
  check(a.state === 'done', `the answer ended as ${a.state}: ${a.text} ${a.detail}`);
  check(a.streamedSeen, 'the answer arrived without streamed text before the end');
  check(a.cards.length === 3, `${a.cards.length} cards instead of 3: ${a.text}`);
  const unknown = a.cards.filter((title) => !ecoCatalog.has(title));
  check(unknown.length === 0, `cards not in the eco catalog: ${JSON.stringify(unknown)}`);
  ecoCardsSeen = a.cards;
  // The page asks for `usage=1`: the token counts reach the developer panel (hidden or not).
  const raw = JSON.parse(await page.locator('#raw').textContent());
  check(raw.close && raw.close.status === 200, 'the raw JSON is not the close envelope');
  check(raw.usage && raw.usage.completion_tokens > 0, `the eco answer brought no usage event: ${JSON.stringify(raw.usage)}`);
  check(/^\d+$/.test((await page.locator('#stat-prompt').textContent()).trim()), 'no prompt tokens in the developer panel');
  await shot(page, '02-eco-cards');
});

await step('eco-free-text', page, async () => {
  freeTextUser = '회사에서 플라스틱 쓰레기를 줄이는 방법을 알려 주세요';
  const before = await botCount(page);
  await send(page, freeTextUser);
  const a = await waitAnswer(page, before, { needStreaming: false });
  check(a.state === 'done', `the answer ended as ${a.state}: ${a.text} ${a.detail}`);
  check(a.text.length > 0, 'the answer is empty');
  if (a.cards.length) {
    ecoCatalog = ecoCatalog || await ecoTitles();
    check(a.cards.length === 3, `${a.cards.length} cards instead of 3`);
    const unknown = a.cards.filter((title) => !ecoCatalog.has(title));
    check(unknown.length === 0, `cards not in the eco catalog: ${JSON.stringify(unknown)}`);
  }
  const users = await page.locator('#log .msg.user .bubble-text').allTextContents();
  check(users.includes(freeTextUser), `the sent message is not shown: ${JSON.stringify(users)}`);
  await shot(page, '03-eco-free-text');
});

await step('reload-keeps-conversation', page, async () => {
  const before = await page.locator('#log .msg').allTextContents();
  check(before.length >= 4, `only ${before.length} messages before the reload`);
  await page.reload({ waitUntil: 'load' });
  await page.waitForSelector('#log .msg');
  const after = await page.locator('#log .msg').allTextContents();
  check(JSON.stringify(after) === JSON.stringify(before),
    `the conversation changed over the reload: ${before.length} messages before, ${after.length} after`);
  const users = await page.locator('#log .msg.user .bubble-text').allTextContents();
  check(users.includes(freeTextUser), 'the free-text message is gone after the reload');
  const titles = (await page.locator('#log .card-title').allTextContents()).map((s) => s.replace(/^\s*\d+\.\s*/, '').trim());
  check(ecoCardsSeen.every((title) => titles.includes(title)), 'the cards are gone after the reload');
  await shot(page, '04-eco-after-reload');
});

await step('books', page, async () => {
  const titles = bookTitles();
  await page.locator('.domain[data-domain="books"]').click();
  let before = 0;
  const answers = ['불안함', '위로와 안정감', '직장인', '잠들기 전 독서', '가볍게 읽을 수 있는 책'];
  for (let i = 0; i < answers.length; i += 1) {
    await page.waitForFunction((n) => {
      const q = [...document.querySelectorAll('#log .msg.bot')].pop();
      return q && (q.classList.contains('question') && q.textContent.includes(`${n}/5`) || q.classList.contains('error'));
    }, i + 1, { timeout: 30000 }).catch(() => { throw new Failure(`question ${i + 1} did not appear`); });
    const last = lastBot(page);
    if (await last.getAttribute('data-state') === 'error') {
      throw new Failure(`question ${i + 1}: ${(await last.textContent()).trim()}`);
    }
    check((await last.locator('.bubble-text').textContent()).trim().length > 8, `question ${i + 1} is empty`);
    before = await botCount(page);
    await send(page, answers[i]);
  }
  const a = await waitAnswer(page, before, { streamingShot: '05-books-streaming' });
  check(a.state === 'done', `the recommendation ended as ${a.state}: ${a.text} ${a.detail}`);
  check(a.streamedSeen, 'the recommendation arrived without streamed text before the end');
  check(a.cards.length === 3, `${a.cards.length} book cards instead of 3`);
  const unknown = a.cards.filter((title) => !titles.has(title));
  check(unknown.length === 0, `books not in ${path.basename(booksCatalog)}: ${JSON.stringify(unknown)}`);
  await shot(page, '05-books-cards');
});

await step('free-chat', page, async () => {
  await page.locator('.domain[data-domain="chat"]').click();
  const before = await botCount(page);
  await send(page, '안녕하세요! 한 문장으로 자기소개를 해 주세요.');
  if (apiKey) {
    const dialog = page.locator('#key-dialog');
    await dialog.waitFor({ state: 'visible', timeout: 30000 })
      .catch(() => { throw new Failure('the server wants a key but the page did not ask for one'); });
    await page.locator('#key-input').fill(apiKey);
    await page.locator('#key-ok').click();
  }
  const a = await waitAnswer(page, before);
  check(a.state === 'done', `the answer ended as ${a.state}: ${a.text} ${a.detail}`);
  check(a.streamedSeen, 'the answer arrived without streamed text before the end');
  check(a.text.length > 0, 'the answer is empty');
  await page.locator('#dev-toggle').click();
  const ttft = (await page.locator('#stat-ttft').textContent()).trim();
  const promptTokens = (await page.locator('#stat-prompt').textContent()).trim();
  check(/\d/.test(ttft), `the developer panel shows no TTFT (${ttft})`);
  check(/^\d+$/.test(promptTokens), `the developer panel shows no prompt tokens (${promptTokens})`);
  const raw = JSON.parse(await page.locator('#raw').textContent());
  check(raw.usage && raw.usage.completion_tokens > 0, 'the raw JSON carries no usage');
  if (apiKey) {
    check(requests.every((r) => !r.url.includes(apiKey)), 'the API key appeared in a URL');
    const v1 = requests.filter((r) => r.url.includes('/v1/'));
    check(v1.length > 0 && v1.at(-1).auth === `Bearer ${apiKey}`, 'the last /v1 request carried no Bearer key');
  }
  await shot(page, '06-free-chat');
});

await step('phone-and-languages', page, async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.locator('.domain[data-domain="eco"]').click();
  const overflow = await page.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the page is ${overflow}px wider than a phone screen`);
  await shot(page, '07-phone-eco');
  for (const [lang, label] of [['en', 'Eco challenges'], ['zh', '环保挑战'], ['ko', '친환경 챌린지']]) {
    await page.locator('#lang').selectOption(lang);
    const text = (await page.locator('.domain[data-domain="eco"]').textContent()).trim();
    check(text === label, `with ${lang} the eco button reads "${text}"`);
    check(await page.evaluate(() => document.documentElement.lang) === lang, `<html lang> is not ${lang}`);
    if (lang === 'en') {
      // An English page asks the server for English challenges (lang=en): the catalog's translations.
      const before = await botCount(page);
      await page.locator('#eco-send').click();
      const a = await waitAnswer(page, before, { needStreaming: false });
      check(a.state === 'done' && a.cards.length === 3, `the English answer ended as ${a.state} with ${a.cards.length} cards`);
      const url = requests.filter((r) => r.url.includes('/base-info?')).at(-1).url;
      check(new URL(url).searchParams.get('lang') === 'en', `the English page asked ${url}`);
      ecoCatalog = ecoCatalog || await ecoTitles();
      const unknown = a.cards.filter((title) => !ecoCatalog.has(title));
      check(unknown.length === 0, `English cards not in the eco catalog's translations: ${JSON.stringify(unknown)}`);
      check(a.cards.every((title) => !/[가-힣]/.test(title)), `Korean titles on the English page: ${JSON.stringify(a.cards)}`);
      await shot(page, '08-phone-eco-english');
    }
  }
  check(jsErrors.length === 0, `script errors: ${jsErrors.join('; ')}`);
});

await context.close();
fs.rmSync(userDataDir, { recursive: true, force: true });

const failed = results.filter((r) => !r.ok);
console.log(`\nbrowser test: ${results.length - failed.length}/${results.length} steps passed; screenshots in ${path.relative(repo, outDir)}/`);
for (const f of failed) console.log(`  failed: ${f.name}: ${f.error}`);
process.exit(failed.length ? 1 : 0);
