// Renders a page `kinot report --html` wrote in Debian's chromium (headless,
// through playwright-core; nothing downloaded), with every request but the
// page's own file refused and recorded, and prints one JSON object: console
// errors, page errors, the requests it tried, the page's size, its charts'
// boxes, a PDF's size (it prints), and the screenshot's path when asked.
//   node report-render.js PAGE.html [SHOT.png [WIDTH]]
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

async function main() {
  const [page_path, shot, width_arg] = process.argv.slice(2);
  const width = Number(width_arg || 1200);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kinot-report-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width, height: 900 }, deviceScaleFactor: 1,
  });
  const out = { console_errors: [], page_errors: [], requests: [] };
  try {
    const url = 'file://' + path.resolve(page_path);
    await ctx.route('**/*', (route) => {
      const u = route.request().url();
      if (u === url) return route.continue();
      out.requests.push(u);
      return route.abort();
    });
    const page = await ctx.newPage();
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') out.console_errors.push(m.text()); });
    page.on('pageerror', (e) => out.page_errors.push(String(e)));
    await page.goto(url, { waitUntil: 'load' });
    Object.assign(out, await page.evaluate(() => {
      const d = document.documentElement;
      const boxes = [...document.querySelectorAll('svg.chart')].map((s) => {
        const r = s.getBoundingClientRect();
        return { class: s.getAttribute('class'), width: r.width, height: r.height, right: r.right };
      });
      return { title: document.title, width: d.scrollWidth, height: d.scrollHeight, inner_width: window.innerWidth,
               charts: boxes, scripts: document.scripts.length };
    }));
    const pdf = await page.pdf({ format: 'A4', printBackground: true });
    out.pdf_bytes = pdf.length;
    out.pdf_pages = (pdf.toString('latin1').match(/\/Type\s*\/Page[^s]/g) || []).length;
    if (shot) {
      await page.screenshot({ path: shot, fullPage: true });
      out.shot = shot;
    }
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });
