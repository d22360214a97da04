// Real-browser tests of the Switchyard client and demo (issue 17): Debian's
// chromium driven by playwright-core (no browser download), against the
// real binary started here on 127.0.0.1:0 with a temp SQLite file.
//
//   node tests/browser/run.mjs [name-filter]
//
// SWITCHYARD_BIN picks the binary (default: the newer of target/release and
// target/debug); CHROMIUM the browser (default /usr/bin/chromium). Exits 1
// on any failure; the demo's screenshots go to tests/browser/artifacts/.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { signToken } from './lib/api.mjs';
import { Server, findBinary } from './lib/server.mjs';
import * as demo from './scenarios/demo.mjs';
import * as fallback from './scenarios/fallback.mjs';
import * as inbox from './scenarios/inbox.mjs';
import * as offline from './scenarios/offline.mjs';
import * as restart from './scenarios/restart.mjs';
import * as tokens from './scenarios/tokens.mjs';

const SCENARIOS = [demo, inbox, restart, fallback, offline, tokens];
const SCENARIO_TIMEOUT_MS = 90_000;
const REPO = path.resolve(import.meta.dirname, '../..');
const ARTIFACTS = path.join(import.meta.dirname, 'artifacts');
const SECRET = `browser-tests-${process.pid}-${Date.now()}`;

const filter = process.argv[2];
const binary = findBinary();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-browser-'));
fs.mkdirSync(ARTIFACTS, { recursive: true });
const servers = [];
const serverLog = [];
let databases = 0;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  // Playwright gives the browser a fresh temporary --user-data-dir itself.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

/** A new server with its own database; `secret: null` for a generated one. */
async function startServer({ secret = SECRET, env } = {}) {
  const dbFile = path.join(tmp, `db-${databases++}.sqlite`);
  const server = new Server({ binary, secret, dbFile, env, log: (line) => serverLog.push(line) });
  servers.push(server);
  return server.start();
}

const token = (claims) => signToken(SECRET, claims);

/** The binary must serve the client on disk, or the tests would test an old build. */
async function checkServedClient() {
  const server = await startServer();
  for (const [url, file] of [['/client.js', 'clients/js/switchyard.js'], ['/demo/app.js', 'clients/js/demo/app.js'], ['/demo/board.js', 'clients/js/demo/board.js'], ['/demo/inbox.js', 'clients/js/demo/inbox.js']]) {
    const served = await (await fetch(`${server.url}${url}`)).text();
    if (served !== fs.readFileSync(path.join(REPO, file), 'utf8')) {
      throw new Error(`${binary} serves an old ${file}: rebuild it (cargo build --bin switchyard)`);
    }
  }
  await server.stop();
}

let failed = 0;
const started = Date.now();
try {
  console.log(`binary ${binary}\nbrowser ${browser.version()}`);
  await checkServedClient();
  for (const scenario of SCENARIOS) {
    if (filter && !scenario.name.includes(filter)) continue;
    const t0 = Date.now();
    const pageErrors = [];
    let timer;
    try {
      await Promise.race([
        scenario.run({ browser, startServer, token, secret: SECRET, artifacts: ARTIFACTS, fail: (m) => pageErrors.push(m) }),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${SCENARIO_TIMEOUT_MS / 1000} s`)), SCENARIO_TIMEOUT_MS))),
      ]);
      if (pageErrors.length) throw new Error(pageErrors.join('\n'));
      console.log(`ok   ${scenario.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${scenario.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n     ${String(e.stack ?? e).replace(/\n/g, '\n     ')}`);
    } finally {
      clearTimeout(timer);
      for (const s of servers.splice(0)) await s.stop().catch(() => s.kill());
    }
  }
} catch (e) {
  failed++;
  console.log(`FAIL setup: ${e.message}`);
} finally {
  await browser.close();
  for (const s of servers) s.kill();
  fs.rmSync(tmp, { recursive: true, force: true });
}
if (failed && serverLog.length) console.log(`--- server log (last lines) ---\n${serverLog.join('').split('\n').slice(-40).join('\n')}`);
console.log(`${failed ? `${failed} failed` : 'all passed'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(failed ? 1 : 0);
