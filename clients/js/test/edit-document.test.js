// Unit tests of the OT document client against an in-memory server: several
// clients editing at once (astral text included), with lost requests and
// answers, converge on the server's text; the textarea binding keeps the
// caret on its text.
import test from 'node:test';
import assert from 'node:assert/strict';
import { EditDocument, TextOperation, bindTextarea } from '../switchyard.js';
import { FakeEditServer } from '../test-support/fake-edit-server.js';
import { randomOperation, rng } from '../test-support/random.js';

const RESOURCE = { resource_type: 'task', resource_id: '1', field: 'description' };
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function settle(server, docs) {
  for (let i = 0; i < 2000; i++) {
    await Promise.all(docs.map((d) => d.whenSynced()));
    await tick(5);
    if (server.clients.every((c) => c.idle) && docs.every((d) => d.status === 'synchronized')) return;
  }
  throw new Error('did not settle');
}

for (const [seed, failures] of [[1, 0], [2, 0], [3, 0.15], [4, 0.3]]) {
  test(`three clients editing at once converge (seed ${seed}, failure rate ${failures})`, async () => {
    const random = rng(seed);
    const server = new FakeEditServer(random, { failures });
    const docs = [];
    for (const user of ['ann', 'bob', 'cy']) {
      const doc = new EditDocument(server.client(user), RESOURCE);
      await doc.open();
      docs.push(doc);
    }
    for (let round = 0; round < 60; round++) {
      const doc = docs[Math.floor(random() * docs.length)];
      doc.applyLocal(randomOperation(random, doc.text));
      if (random() < 0.5) await tick(Math.floor(random() * 4));
    }
    await settle(server, docs);
    for (const doc of docs) {
      assert.equal(doc.text, server.content);
      assert.equal(doc.revision, server.history.length);
    }
    assert.ok(server.history.length > 10, 'operations were applied');
  });
}

test('a late joiner starts from the session text and follows', async () => {
  const random = rng(8);
  const server = new FakeEditServer(random);
  const a = new EditDocument(server.client('ann'), RESOURCE);
  await a.open();
  a.setText('Hello 😀 world');
  await settle(server, [a]);
  const b = new EditDocument(server.client('bob'), RESOURCE);
  await b.open();
  assert.equal(b.text, 'Hello 😀 world');
  b.setText('Hello 😀 big world');
  a.setText('Hello 😀 world!');
  await settle(server, [a, b]);
  assert.equal(a.text, 'Hello 😀 big world!');
  assert.equal(b.text, a.text);
});

/** Just enough of a <textarea> for the binding. */
class FakeTextarea extends EventTarget {
  value = '';
  selectionStart = 0;
  selectionEnd = 0;
  selectionDirection = 'none';
  scrollTop = 0;
  setSelectionRange(s, e) {
    this.selectionStart = s;
    this.selectionEnd = e;
  }
  type(text) {
    const v = this.value;
    this.value = v.slice(0, this.selectionStart) + text + v.slice(this.selectionEnd);
    this.selectionStart = this.selectionEnd = this.selectionStart + text.length;
    this.dispatchEvent(new Event('input'));
  }
}

test('the binding sends typed text and keeps the caret on its text through remote edits', async () => {
  const random = rng(21);
  const server = new FakeEditServer(random);
  globalThis.document = { activeElement: null };
  const a = new EditDocument(server.client('ann'), RESOURCE);
  const b = new EditDocument(server.client('bob'), RESOURCE);
  await a.open();
  await b.open();
  const area = new FakeTextarea();
  globalThis.document.activeElement = area;
  bindTextarea(a, area);
  area.type('one 😀 two');
  await settle(server, [a, b]);
  assert.equal(b.text, 'one 😀 two');
  // Caret after "one 😀" (UTF-16 index 6); Bob edits before and after it.
  area.setSelectionRange(6, 6);
  b.applyLocal(TextOperation.fromJSON([{ insert: '🎉 ' }, { retain: 9 }]));
  await settle(server, [a, b]);
  b.applyLocal(TextOperation.fromJSON([{ retain: 11 }, { insert: '!' }]));
  await settle(server, [a, b]);
  assert.equal(area.value, '🎉 one 😀 two!');
  assert.equal(area.value.slice(0, area.selectionStart), '🎉 one 😀');
  area.type('X');
  await settle(server, [a, b]);
  assert.equal(server.content, '🎉 one 😀X two!');
  assert.equal(b.text, server.content);
  delete globalThis.document;
});
