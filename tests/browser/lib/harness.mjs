// A page on the server's own origin that imports the client the binary
// serves at /client.js and records what each client sees: events, states,
// token requests, fallbacks, errors. Tokens come from Node (`mint`). The
// page is the server's /healthz: a document served by the server itself (a
// page Playwright fulfilled would not count as loopback, and Chromium's
// local network access checks would then refuse its WebSocket).

/** Runs in the page: loads /client.js and defines window.newClient. */
async function install() {
  const sy = await import('/client.js');
  window.sy = sy;
  window.clients = {};
  window.newClient = (name, user, options) => {
    const log = { events: [], states: [], tokens: [], fallbacks: [], errors: [], resets: [] };
    const client = new sy.SwitchyardClient({
      ...options,
      getToken: ({ reason }) => {
        log.tokens.push(reason);
        return window.mintToken(user, reason, log.tokens.length);
      },
    });
    client.on('event', (e) => log.events.push({ id: e.id, channel: e.channel, event: e.event, data: e.data }));
    client.on('state', (s) => log.states.push(`${s.state}:${s.transport}`));
    client.on('fallback', (f) => log.fallbacks.push(f));
    client.on('error', (e) => log.errors.push(`${e.code}: ${e.message}`));
    client.on('reset', (r) => log.resets.push(r));
    window.clients[name] = { client, log };
    return client.start();
  };
}

export async function openHarness(browser, base, { mint, onError }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => onError?.(`page error: ${e.message}`));
  await page.exposeFunction('mintToken', (user, reason, n) => mint(user, reason, n));
  await page.goto(`${base}/healthz`);
  await page.evaluate(install);
  return {
    context,
    page,
    /** Starts a client named `name` for `user` with client options. */
    start: (name, user, options) => page.evaluate(([n, u, o]) => window.newClient(n, u, o), [name, user, options]),
    log: (name) => page.evaluate((n) => window.clients[n].log, name),
    client: (name, fn, arg) => page.evaluate(([n, f, a]) => new Function('client', 'arg', `return (${f})(client, arg)`)(window.clients[n].client, a), [name, fn.toString(), arg]),
    close: () => context.close(),
  };
}
