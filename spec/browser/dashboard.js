// Drives Debian's chromium (headless, through playwright-core: nothing is
// downloaded) against a running `kinot serve`'s dashboard, for
// spec/dashboard_browser_spec.lua.  One scenario a run:
//   node spec/browser/dashboard.js '{"url": "...", "scenario": "...", ...}'
// prints one JSON line: what the page showed, and every URL it asked for.
// The spec (busted) holds the servers, the simulator's counters and the
// truth to compare with.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const { chromium } = require('playwright-core');

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kinot-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.KINOT_CHROMIUM || '/usr/bin/chromium', args: ARGS,
    viewport: { width: cfg.width || 1280, height: cfg.height || 800 }, deviceScaleFactor: cfg.scale || 1,
  });
  const out = { requests: [], console: [], dialogs: 0 };
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on('request', (r) => out.requests.push(r.url()));
    // the browser's own line for an HTTP error answer (a 401 the page shows) is no script error
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) out.console.push(m.text());
    });
    page.on('dialog', async (d) => { out.dialogs += 1; await d.dismiss(); });
    page.on('pageerror', (e) => out.console.push('pageerror: ' + e.message));
    const t0 = Date.now();
    await page.goto(cfg.url + '/', { waitUntil: 'load' });
    await page.waitForSelector('body[data-ready="1"]', { timeout: cfg.ready_ms || 15000 });
    out.ready_ms = Date.now() - t0; // the page asked, every device read and drawn
    if (cfg.token !== undefined) await page.fill('#token', cfg.token);
    await SCENARIOS[cfg.scenario](page, cfg, out);
    out.pwned = await page.evaluate(() => window.__pwned === undefined ? null : window.__pwned);
    out.images = await page.evaluate(() => document.images.length);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

// what the page shows: the summary's figures, the groups' counts, the tiles
async function shown(page) {
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id).textContent;
    const groups = {};
    document.querySelectorAll('section.group').forEach((s) => {
      const c = s.querySelector('.gcount');
      groups[s.querySelector('.gname').textContent] = {
        key: s.dataset.group, occupied: Number(c.dataset.occupied), free: Number(c.dataset.free),
        total: Number(c.dataset.total), tiles: s.querySelectorAll('.bay').length,
        tiles_occupied: s.querySelectorAll('.bay[data-occupied="1"]:not([data-gone])').length,
      };
    });
    const tiles = {};
    document.querySelectorAll('#groups-body .bay').forEach((b) => { tiles[b.dataset.sn] = b.dataset.occupied; });
    return {
      occupied: text('occ-occupied'), free: text('occ-free'), total: text('occ-total'), faults: text('faults'),
      low_battery: text('low-battery'), weak_signal: text('weak-signal'), dtus_offline: text('dtus-offline'),
      stale: text('stale'), groups, tiles,
      tiles_occupied: document.querySelectorAll('#groups-body .bay[data-occupied="1"]:not([data-gone])').length,
      dtus: Array.from(document.querySelectorAll('#dtus-body .dtu')).map((d) => d.dataset.sn),
      feed: Array.from(document.querySelectorAll('#feed-body .ev')).length,
      body_text: document.body.innerText,
    };
  });
}

async function openCommand(page, cfg) {
  await page.click(`#groups-body .bay[data-sn="${cfg.sn}"]`);
  await page.waitForSelector(`#d-body button[data-command="${cfg.command}"]`);
  await page.click(`#d-body button[data-command="${cfg.command}"]`);
  await page.waitForSelector('#modal.open');
}

const SCENARIOS = {
  // the page against the twin's own summary, read after it
  async occupancy(page, cfg, out) {
    await page.waitForTimeout(300);
    out.shown = await shown(page);
  },
  // the page open, `kinot sim drift --count 20` run, the tiles followed
  // until each changed device shows its new state, without a reload
  async drift(page, cfg, out) {
    await page.evaluate(() => { window.__same_page = 'yes'; });
    const before = (await shown(page)).tiles;
    const c0 = Date.now();
    const answer = JSON.parse(execFileSync(cfg.drift[0], cfg.drift.slice(1), { cwd: cfg.cwd, encoding: 'utf8' }));
    const t0 = Date.now(); // the command has returned: from here, within 2 s
    out.drift_ms = t0 - c0;
    const changed = Array.isArray(answer) ? answer : answer.changed; // `kinot --json sim drift`: the serials
    const flips = {};
    for (const sn of changed) flips[sn] = (flips[sn] || 0) + 1;
    // a device changed once shows the other state; one changed twice in the
    // same second may end either way (the twin's tie rule: docs/fleet.md):
    // the page shows what the twin holds, whatever it is
    const once = {};
    for (const sn of Object.keys(flips)) {
      if (flips[sn] === 1) once[sn] = before[sn] === '1' ? '0' : '1';
    }
    out.changed = changed;
    out.want = once;
    out.updated = false;
    const deadline = t0 + (cfg.within_ms || 2000);
    for (;;) {
      const tiles = (await page.evaluate(() => {
        const t = {};
        document.querySelectorAll('#groups-body .bay').forEach((b) => { t[b.dataset.sn] = b.dataset.occupied; });
        return t;
      }));
      const now = Date.now();
      let ok = Object.keys(once).every((sn) => tiles[sn] === once[sn]);
      if (ok) {
        const twin = await Promise.all(Object.keys(flips).map(async (sn) =>
          [sn, (await (await fetch(`${cfg.url}/api/devices/${sn}`)).json()).state.car_detected]));
        for (const [sn, car] of twin) if (tiles[sn] !== String(car)) ok = false;
      }
      if (ok && now <= deadline) { out.updated = true; break; }
      if (Date.now() > deadline) break;
      await page.waitForTimeout(50);
    }
    out.elapsed_ms = Date.now() - t0;
    out.same_page = await page.evaluate(() => window.__same_page || null);
    await page.waitForTimeout(900); // the summary follows the tiles
    out.shown = await shown(page);
  },
  // a command through its button: confirmed (Send clicked twice, the way a
  // hurried operator does), followed until final
  async command(page, cfg, out) {
    await openCommand(page, cfg);
    await page.click('#m-send');
    await page.click('#m-send', { force: true, timeout: 500 }).catch(() => {});
    await page.waitForSelector('#d-body .cmd-course[data-final]', { timeout: cfg.within_ms || 15000 });
    // the button again while it runs would be disabled; once final, the course stays
    out.final = await page.getAttribute('#d-body .cmd-course', 'data-final');
    out.course = await page.$$eval('#d-body .cmd-course .course .chip', (cs) => cs.map((c) => c.textContent));
    out.alert = await page.$$eval('#d-body .msg', (ms) => ms.map((m) => m.textContent));
    out.notes = await page.$$eval('#d-body .cmd-course .note', (ms) => ms.map((m) => m.textContent));
  },
  // a command refused for its token: what the page says
  async refused(page, cfg, out) {
    await openCommand(page, cfg);
    out.modal_note = await page.textContent('#m-token');
    await page.click('#m-send');
    await page.waitForSelector('#d-body .cmd-course .msg', { timeout: 5000 });
    out.alert = await page.textContent('#d-body .cmd-course .msg');
    out.token_state = await page.textContent('#token-state');
    out.buttons_enabled = await page.$$eval('#d-body .cmds button', (bs) => bs.every((b) => !b.disabled));
  },
  // a picture of the page, for the docs
  async screenshot(page, cfg, out) {
    if (cfg.sn) {
      await page.click(`#groups-body .bay[data-sn="${cfg.sn}"]`);
      await page.waitForSelector('#d-body table');
      if (cfg.command) {
        await page.click(`#d-body button[data-command="${cfg.command}"]`);
        await page.click('#m-send');
        await page.waitForSelector('#d-body .cmd-course[data-final]', { timeout: 15000 });
      }
    }
    await page.mouse.move(1, 790); // no tile under the pointer (hovered)
    await page.evaluate(() => { document.getElementById('d-body').scrollTop = 0; });
    await page.waitForTimeout(cfg.settle_ms || 1500);
    await page.screenshot({ path: cfg.path });
    out.path = cfg.path;
  },
};

main().catch((e) => {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + '\n');
  process.exit(1);
});
