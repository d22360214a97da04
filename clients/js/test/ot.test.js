// Unit tests of the text operations: code point lengths (astral characters),
// apply, normal form, transform (TP1 against random operations), compose,
// caret transformation and input diffs. Run: node --test clients/js/test/
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  TextOperation,
  codePointLength,
  compose,
  diffToOperation,
  toCodePointIndex,
  toUtf16Index,
  transform,
  transformIndex,
} from '../switchyard.js';
import { randomDoc, randomOperation, rng } from '../test-support/random.js';

const op = (list) => TextOperation.fromJSON(list);

test('lengths count code points, as the server does', () => {
  assert.equal(codePointLength('abc'), 3);
  assert.equal(codePointLength('😀'), 1);
  assert.equal(codePointLength('👍🏽'), 2); // emoji + skin tone modifier
  assert.equal(codePointLength('👩‍👩‍👧'), 5); // three people joined by two ZWJs
  assert.equal(codePointLength('a😀b'), 3);
  assert.equal(toCodePointIndex('a😀b', 3), 2);
  assert.equal(toUtf16Index('a😀b', 2), 3);
  assert.equal(toUtf16Index('a😀b', 9), 4);
});

test('apply walks astral characters by code point', () => {
  const doc = 'x😀y👍🏽z';
  assert.equal(op([{ retain: 1 }, { delete: 1 }, { retain: 4 }]).apply(doc), 'xy👍🏽z');
  assert.equal(op([{ retain: 3 }, { insert: '🎉' }, { retain: 3 }]).apply(doc), 'x😀y🎉👍🏽z');
  assert.equal(op([{ retain: 4 }, { delete: 1 }, { retain: 1 }]).apply(doc), 'x😀y👍z');
  assert.throws(() => op([{ retain: 9 }]).apply(doc), /spans 9 characters but the document has 6/);
});

test('operations are normalised like the server and ot.js', () => {
  const o = new TextOperation().retain(2).retain(0).delete(1).insert('ab').insert('c').delete(2).retain(1);
  assert.deepEqual(o.toJSON(), [{ retain: 2 }, { insert: 'abc' }, { delete: 3 }, { retain: 1 }]);
  assert.equal(o.baseLength, 6);
  assert.equal(o.targetLength, 6);
  for (const bad of [[{ retain: 0 }], [{ insert: '' }], [{ delete: -1 }], [{ retain: 1.5 }], [{ move: 1 }], [{ retain: 1, delete: 1 }], {}]) {
    assert.throws(() => op(bad), TypeError, JSON.stringify(bad));
  }
});

test("the README's concurrent example: the later operation inserts first", () => {
  const doc = 'Hello world';
  const alice = op([{ retain: 6 }, { insert: 'big ' }, { retain: 5 }]);
  const bob = op([{ retain: 6 }, { insert: 'small ' }, { retain: 5 }]);
  // The server got Alice's first, so Bob's (received later) is `a`.
  const [bobOnServer, aliceForBob] = transform(bob, alice);
  assert.deepEqual(bobOnServer.toJSON(), [{ retain: 6 }, { insert: 'small ' }, { retain: 9 }]);
  assert.deepEqual(aliceForBob.toJSON(), [{ retain: 12 }, { insert: 'big ' }, { retain: 5 }]);
  assert.equal(bobOnServer.apply(alice.apply(doc)), 'Hello small big world');
  assert.equal(aliceForBob.apply(bob.apply(doc)), 'Hello small big world');
});

test('transform satisfies TP1 on random operations with astral text', () => {
  const random = rng(17);
  for (let i = 0; i < 3000; i++) {
    const doc = randomDoc(random, 12);
    const a = randomOperation(random, doc);
    const b = randomOperation(random, doc);
    const [a2, b2] = transform(a, b);
    const viaA = b2.apply(a.apply(doc));
    const viaB = a2.apply(b.apply(doc));
    assert.equal(viaA, viaB, `doc=${JSON.stringify(doc)} a=${JSON.stringify(a)} b=${JSON.stringify(b)}`);
  }
});

test('compose equals applying one operation after the other', () => {
  const random = rng(5);
  for (let i = 0; i < 2000; i++) {
    const doc = randomDoc(random, 12);
    const a = randomOperation(random, doc);
    const b = randomOperation(random, a.apply(doc));
    const ab = compose(a, b);
    assert.equal(ab.apply(doc), b.apply(a.apply(doc)));
    assert.equal(ab.baseLength, a.baseLength);
    assert.equal(ab.targetLength, b.targetLength);
  }
});

test('transform and compose refuse mismatched lengths', () => {
  assert.throws(() => transform(op([{ retain: 1 }]), op([{ retain: 2 }])), /base lengths 1 and 2/);
  assert.throws(() => compose(op([{ retain: 1 }]), op([{ retain: 2 }])), /cannot compose/);
});

test('a caret moves with remote edits and stays on its text', () => {
  // "abcdef", caret before "d" (3).
  assert.equal(transformIndex(op([{ insert: 'XY' }, { retain: 6 }]), 3), 5);
  assert.equal(transformIndex(op([{ retain: 3 }, { insert: 'XY' }, { retain: 3 }]), 3), 3);
  assert.equal(transformIndex(op([{ retain: 3 }, { insert: 'XY' }, { retain: 3 }]), 3, true), 5);
  assert.equal(transformIndex(op([{ retain: 4 }, { insert: 'XY' }, { retain: 2 }]), 3), 3);
  assert.equal(transformIndex(op([{ delete: 2 }, { retain: 4 }]), 3), 1);
  assert.equal(transformIndex(op([{ retain: 1 }, { delete: 4 }, { retain: 1 }]), 3), 1);
  assert.equal(transformIndex(op([{ retain: 1 }, { insert: '😀' }, { retain: 5 }]), 3), 4);
});

test('input diffs turn one value into the next, at the caret, without splitting pairs', () => {
  assert.deepEqual(diffToOperation('aa', 'aaa', 1).toJSON(), [{ insert: 'a' }, { retain: 2 }]);
  assert.deepEqual(diffToOperation('aa', 'aaa', 3).toJSON(), [{ retain: 2 }, { insert: 'a' }]);
  // Replacing one emoji by another sharing its high surrogate.
  assert.deepEqual(diffToOperation('x😀y', 'x😁y', 3).toJSON(), [{ retain: 1 }, { insert: '😁' }, { delete: 1 }, { retain: 1 }]);
  assert.deepEqual(diffToOperation('a😀', 'a', 1).toJSON(), [{ retain: 1 }, { delete: 1 }]);
  const random = rng(9);
  for (let i = 0; i < 3000; i++) {
    const before = randomDoc(random, 10);
    const after = randomOperation(random, before).apply(before);
    const caret = Math.floor(random() * (after.length + 1));
    const d = diffToOperation(before, after, caret);
    assert.equal(d.apply(before), after, `${JSON.stringify(before)} -> ${JSON.stringify(after)} @${caret}`);
    assert.equal(JSON.stringify(d.toJSON()).includes('\\ud'), false, 'no lone surrogate');
  }
});
