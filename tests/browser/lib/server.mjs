// Starts the real `switchyard` binary for the browser tests, as the Rust
// tests do (tests/common/mod.rs): 127.0.0.1 on port 0 (or a given port, to
// restart in place), a temp SQLite file, and the address read from the
// `switchyard listening on http://ADDR` line. Without a secret the server
// generates one and prints a service token, which is kept.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

const REPO = path.resolve(import.meta.dirname, '../../..');

/** $SWITCHYARD_BIN, else the newer of the release and debug builds. */
export function findBinary() {
  if (process.env.SWITCHYARD_BIN) return process.env.SWITCHYARD_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? path.join(REPO, 'target');
  const builds = ['release', 'debug']
    .map((p) => path.join(target, p, 'switchyard'))
    .filter((f) => fs.existsSync(f))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  if (!builds.length) throw new Error(`no switchyard binary under ${target}: run cargo build --bin switchyard first`);
  return builds[0];
}

export class Server {
  /**
   * @param options.secret  HS256 secret, or none for a generated one (dev tokens)
   * @param options.dbFile  SQLite file (kept across restarts)
   * @param options.port    0 for any free port
   */
  constructor({ binary, secret, dbFile, port = 0, env = {}, log }) {
    Object.assign(this, { binary, secret, dbFile, port, env, log });
    this.child = null;
  }

  get url() {
    return `http://${this.addr}`;
  }

  async start() {
    const env = {
      ...process.env,
      SWITCHYARD_LISTEN: `127.0.0.1:${this.port}`,
      SWITCHYARD_DATABASE_URL: `sqlite://${this.dbFile}`,
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
      ...this.env,
    };
    delete env.SWITCHYARD_JWT_SECRET;
    delete env.SWITCHYARD_JWT_PUBLIC_KEY;
    if (this.secret) env.SWITCHYARD_JWT_SECRET = this.secret;
    const child = spawn(this.binary, ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    child.stderr.on('data', (d) => this.log?.(d.toString()));
    const lines = readline.createInterface({ input: child.stdout });
    // With a generated secret the dev banner follows the address line; its
    // service token is on the line after "Service token".
    const wanted = (banner) => {
      const addr = banner.map((l) => /^switchyard listening on http:\/\/(\S+)$/.exec(l)?.[1]).find(Boolean);
      if (!addr || this.secret) return addr && { addr };
      const i = banner.findIndex((l) => l.startsWith('Service token'));
      return i >= 0 && banner[i + 1] && { addr, serviceToken: banner[i + 1].trim() };
    };
    const found = await new Promise((resolve, reject) => {
      const banner = [];
      const timer = setTimeout(() => reject(new Error('server did not start within 20 s')), 20000);
      child.on('exit', (code) => reject(new Error(`server exited with ${code} before listening`)));
      lines.on('line', (line) => {
        banner.push(line);
        const got = wanted(banner);
        if (got) {
          clearTimeout(timer);
          resolve(got);
        }
      });
    });
    this.addr = found.addr;
    this.serviceToken = found.serviceToken;
    this.port = Number(this.addr.split(':').pop());
    return this;
  }

  /** SIGTERM and wait for a clean exit (the server promises one within 10 s). */
  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.kill('SIGTERM');
    const timeout = new Promise((r) => setTimeout(() => r(null), 15000));
    const result = await Promise.race([this.exited, timeout]);
    if (!result) {
      this.child.kill('SIGKILL');
      throw new Error('server did not exit within 15 s of SIGTERM');
    }
    if (result.code !== 0) throw new Error(`server exited with ${result.code ?? result.signal} after SIGTERM`);
  }

  /** SIGKILL: a crash, with no shutdown message to the streams. */
  async crash() {
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** Last resort at the end of a run. */
  kill() {
    if (this.child && this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}
