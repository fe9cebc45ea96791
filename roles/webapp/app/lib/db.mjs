// The database side of /api/db: one lazily connected MongoClient per process,
// shared by all requests, against the replica set in MONGODB_URI (no default).
//
// Invariants: a request never waits longer than DEADLINE_MS for the database;
// a failed connect drops the client so the next attempt starts clean; after a
// failure the breaker answers at once for BREAKER_OPEN_MS; error details never
// carry credentials from the URI.
import { MongoClient } from 'mongodb';
import { Breaker } from './breaker.mjs';

export const DEADLINE_MS = 2000;
export const BREAKER_OPEN_MS = 3000;

const breaker = new Breaker({ openMs: BREAKER_OPEN_MS });
let clientPromise = null;

export class DbUnavailable extends Error {
  constructor(message, retryAfterMs = BREAKER_OPEN_MS) {
    super(message);
    this.name = 'DbUnavailable';
    this.retryAfterMs = retryAfterMs;
  }
}

function connect(uri) {
  if (!clientPromise) {
    const client = new MongoClient(uri, {
      serverSelectionTimeoutMS: DEADLINE_MS,
      connectTimeoutMS: DEADLINE_MS,
      socketTimeoutMS: 5000,
      maxPoolSize: 20,
      appName: 'haimg-webapp',
    });
    clientPromise = client.connect().catch((err) => {
      clientPromise = null;
      client.close().catch(() => {});
      throw err;
    });
  }
  return clientPromise;
}

function withDeadline(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Increment this slot's hit counter (a real write) and report the primary. */
async function hit(uri, slot) {
  const client = await connect(uri);
  const db = client.db();
  const doc = await db
    .collection('hits')
    .findOneAndUpdate(
      { _id: slot },
      { $inc: { count: 1 }, $set: { lastAt: new Date() } },
      { upsert: true, returnDocument: 'after' },
    );
  const hello = await db.command({ hello: 1 });
  return { slot, hits: doc?.count ?? null, primary: hello.primary ?? null, setName: hello.setName ?? null };
}

export function redact(message) {
  return String(message).replace(/\/\/[^@/\s]*@/g, '//***@');
}

/** Resolves with the hit result or rejects with DbUnavailable within DEADLINE_MS. */
export async function dbHit(env = process.env) {
  const uri = env.MONGODB_URI;
  if (!uri) throw new DbUnavailable('MONGODB_URI is not set');
  const slot = env.HAIMG_SLOT || 'unknown';
  try {
    return await breaker.run(() => withDeadline(hit(uri, slot), DEADLINE_MS));
  } catch (err) {
    throw new DbUnavailable(redact(err?.message ?? err), err?.retryAfterMs ?? BREAKER_OPEN_MS);
  }
}
