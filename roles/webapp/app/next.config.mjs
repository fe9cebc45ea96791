// Next.js configuration for the haimg webapp image.
//
// Invariants: the build is deterministic given APP_BUILD_ID (else the package
// version), NEXT_SERVER_ACTIONS_ENCRYPTION_KEY, a pre-seeded .next/cache/.previewinfo
// and a fixed build path (see README.md). Nothing here reads the network.
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'));

/** @type {import('next').NextConfig} */
const nextConfig = {
  output: 'standalone',
  poweredByHeader: false,
  // A random id by default; fixed so two builds of the same source are identical.
  generateBuildId: async () => process.env.APP_BUILD_ID || `v${pkg.version}`,
  // The image ships without sharp: nothing uses next/image optimisation.
  images: { unoptimized: true },
};

export default nextConfig;
