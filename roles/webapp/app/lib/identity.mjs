// Who is serving: the slot, the haimg version and the image hash, read at
// request time from the environment haimg-init gives the process.
//
// HOSTNAME is deliberately not used: the standalone server binds to it.
import os from 'node:os';

export function identity(env = process.env) {
  return {
    slot: env.HAIMG_SLOT || null,
    version: env.HAIMG_VERSION || null,
    imageHash: env.HAIMG_IMAGE_HASH || null,
  };
}

/** The one-line description shown on the page. */
export function servedBy(id) {
  const hash = id.imageHash ? id.imageHash.slice(0, 12) : 'unknown';
  return `served by ${id.slot ?? 'an unknown slot'} (haimg ${id.version ?? 'unknown'}, image ${hash})`;
}

export function health(env = process.env) {
  return {
    ok: true,
    ...identity(env),
    hostname: os.hostname(),
    pid: process.pid,
    uptimeS: Math.round(process.uptime() * 10) / 10,
  };
}
