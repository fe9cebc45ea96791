// The front page: rendered per request (never prerendered) so it shows which slot served it.
import { identity, servedBy } from '../lib/identity.mjs';

export const dynamic = 'force-dynamic';

export default function Home() {
  const id = identity();
  return (
    <main>
      <h1>haimg webapp</h1>
      <p id="served-by">{servedBy(id)}</p>
      <ul>
        <li><a href="/api/health">/api/health</a>: process identity and uptime</li>
        <li><a href="/api/db">/api/db</a>: a hit counter in the rs0 replica set</li>
      </ul>
    </main>
  );
}
