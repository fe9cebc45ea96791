// Derives the Next.js build keys from one build secret, so builds are
// reproducible without committing keys (`haimg build` does the same in Rust).
//
//   key(label) = HMAC-SHA256(key = secret bytes, message = "haimg/webapp/" + label)
//   previewModeId            = hex(key("next-preview-mode-id")[0..16])
//   previewModeSigningKey    = hex(key("next-preview-signing-key"))
//   previewModeEncryptionKey = hex(key("next-preview-encryption-key"))
//   serverActionsKey         = base64(key("next-server-actions-key"))   (AES-256, 32 bytes)
//
// Usage: node derive-keys.mjs SECRET_FILE [previewinfo|server-actions-key]
// prints .next/cache/.previewinfo (JSON, expireAt 2100-01-01) or the base64 key.
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';

export const EXPIRE_AT = 4102444800000; // 2100-01-01T00:00:00Z: next build rotates expired keys

function key(secret, label) {
  return createHmac('sha256', secret).update(`haimg/webapp/${label}`).digest();
}

export function deriveKeys(secret) {
  return {
    previewinfo: {
      previewModeId: key(secret, 'next-preview-mode-id').subarray(0, 16).toString('hex'),
      previewModeSigningKey: key(secret, 'next-preview-signing-key').toString('hex'),
      previewModeEncryptionKey: key(secret, 'next-preview-encryption-key').toString('hex'),
      expireAt: EXPIRE_AT,
    },
    serverActionsKey: key(secret, 'next-server-actions-key').toString('base64'),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, what] = process.argv.slice(2);
  if (!file || !['previewinfo', 'server-actions-key'].includes(what)) {
    console.error('usage: derive-keys.mjs SECRET_FILE previewinfo|server-actions-key');
    process.exit(2);
  }
  const secret = readFileSync(file);
  if (secret.length < 16) {
    console.error(`derive-keys: secret in ${file} is ${secret.length} bytes, need at least 16`);
    process.exit(2);
  }
  const keys = deriveKeys(secret);
  process.stdout.write(what === 'previewinfo' ? JSON.stringify(keys.previewinfo) : `${keys.serverActionsKey}\n`);
}
