// Seeded random documents and operations for the unit tests, mixing ASCII
// with astral characters so code point handling is always exercised.
import { TextOperation, codePointLength } from '../switchyard.js';

const ALPHABET = ['a', 'b', 'c', ' ', 'é', '😀', '👍', '🏽', '\u200d', '中'];

/** A small deterministic generator (mulberry32). */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomText(random, max) {
  let s = '';
  const n = Math.floor(random() * (max + 1));
  for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(random() * ALPHABET.length)];
  return s;
}

export const randomDoc = randomText;

/** A random operation spanning `doc`. */
export function randomOperation(random, doc) {
  const op = new TextOperation();
  let left = codePointLength(doc);
  while (left > 0) {
    const n = 1 + Math.floor(random() * Math.min(left, 4));
    const r = random();
    if (r < 0.2) op.insert(randomText(random, 3));
    else if (r < 0.5) {
      op.delete(n);
      left -= n;
    } else {
      op.retain(n);
      left -= n;
    }
  }
  if (random() < 0.4) op.insert(randomText(random, 3));
  return op;
}
