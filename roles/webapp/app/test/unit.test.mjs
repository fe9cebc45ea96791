// Unit tests that need neither a build nor a database.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { Breaker, CircuitOpenError } from '../lib/breaker.mjs';
import { identity, servedBy, health } from '../lib/identity.mjs';
import { dbHit, redact, DbUnavailable } from '../lib/db.mjs';

function clock(start = 1000) {
  const c = { t: start, now: () => c.t };
  return c;
}

test('breaker passes results through while closed', async () => {
  const b = new Breaker({ openMs: 3000, now: clock().now });
  assert.equal(await b.run(async () => 42), 42);
  assert.equal(b.retryAfterMs(), 0);
});

test('breaker fails fast after a failure, then lets one probe through', async () => {
  const c = clock();
  const b = new Breaker({ openMs: 3000, now: c.now });
  await assert.rejects(b.run(async () => { throw new Error('refused'); }), /refused/);

  let calls = 0;
  c.t += 2999;
  await assert.rejects(b.run(async () => { calls++; }), (e) => {
    assert.ok(e instanceof CircuitOpenError);
    assert.equal(e.message, 'circuit open after: refused');
    assert.equal(e.retryAfterMs, 1);
    return true;
  });
  assert.equal(calls, 0);

  c.t += 1;
  let release;
  const probe = b.run(() => new Promise((r) => { release = r; }));
  // While the probe is in flight, everyone else still fails fast.
  await assert.rejects(b.run(async () => { calls++; }), CircuitOpenError);
  assert.equal(calls, 0);
  release('up');
  assert.equal(await probe, 'up');
  assert.equal(await b.run(async () => 'closed'), 'closed');
});

test('a failed probe reopens the breaker for a full window', async () => {
  const c = clock();
  const b = new Breaker({ openMs: 3000, now: c.now });
  await assert.rejects(b.run(async () => { throw new Error('a'); }));
  c.t += 3000;
  await assert.rejects(b.run(async () => { throw new Error('b'); }), /^Error: b$/);
  assert.equal(b.retryAfterMs(), 3000);
  await assert.rejects(b.run(async () => 1), /circuit open after: b/);
});

test('a late success from an older call closes the breaker; a late failure reopens it', async () => {
  const c = clock();
  const b = new Breaker({ openMs: 100, now: c.now });
  const pending = [];
  const slow = () => b.run(() => new Promise((resolve, reject) => pending.push({ resolve, reject })));
  const a = slow();
  const d = slow();
  await assert.rejects(b.run(async () => { throw new Error('down'); }));
  assert.equal(b.retryAfterMs(), 100);
  pending[0].resolve('late');
  assert.equal(await a, 'late');
  assert.equal(b.retryAfterMs(), 0);
  c.t += 10;
  pending[1].reject(new Error('gone'));
  await assert.rejects(d, /gone/);
  assert.equal(b.retryAfterMs(), 100);
  await assert.rejects(b.run(async () => 1), /circuit open after: gone/);
});

test('identity comes from HAIMG_* and never from HOSTNAME', () => {
  const env = { HAIMG_SLOT: 'webapp2', HAIMG_VERSION: '1.0.0', HAIMG_IMAGE_HASH: 'abc123def4567890', HOSTNAME: 'x' };
  assert.deepEqual(identity(env), { slot: 'webapp2', version: '1.0.0', imageHash: 'abc123def4567890' });
  assert.equal(servedBy(identity(env)), 'served by webapp2 (haimg 1.0.0, image abc123def456)');
  assert.equal(servedBy(identity({})), 'served by an unknown slot (haimg unknown, image unknown)');
  const h = health(env);
  assert.equal(h.hostname, os.hostname());
  assert.equal(h.pid, process.pid);
  assert.equal(h.ok, true);
});

test('dbHit without MONGODB_URI is unavailable at once', async () => {
  const t0 = Date.now();
  await assert.rejects(dbHit({}), (e) => e instanceof DbUnavailable && e.message === 'MONGODB_URI is not set');
  assert.ok(Date.now() - t0 < 100);
});

test('redact hides credentials in a URI', () => {
  assert.equal(
    redact('failed: mongodb://app:s3cret@10.0.0.1:27017/app'),
    'failed: mongodb://***@10.0.0.1:27017/app',
  );
  assert.equal(redact('Server selection timed out after 2000 ms'), 'Server selection timed out after 2000 ms');
});

test('build keys derive from the secret as documented (vectors cross-checked with openssl)', async () => {
  const { deriveKeys, EXPIRE_AT } = await import('../scripts/derive-keys.mjs');
  const k = deriveKeys(Buffer.from('haimg-test-secret-not-for-production'));
  assert.deepEqual(k.previewinfo, {
    previewModeId: '24150468ae2b2069b9fc28104610213e',
    previewModeSigningKey: '934eaeb90bb3f370a65a9186efbdb1c35d5bbe58a2dce91419448a8b7c211dc4',
    previewModeEncryptionKey: 'a272fe7164a8af5f6e088cfaa03c5d655804d9eeabfa29e4b92adb86d67d895f',
    expireAt: EXPIRE_AT,
  });
  assert.equal(k.serverActionsKey, 'WQPl1ANJXQXi1D7/3Df8VEqcGHxl5i4RvTsPfuldGtA=');
  assert.equal(Buffer.from(k.serverActionsKey, 'base64').length, 32);
  assert.notEqual(deriveKeys(Buffer.from('another-secret-of-enough-length')).serverActionsKey, k.serverActionsKey);
});
