// GET /api/health: 200 while the process is up; identity for load balancers and deploys.
import { health } from '../../../lib/identity.mjs';

export const dynamic = 'force-dynamic';

export function GET() {
  return Response.json(health(), { headers: { 'cache-control': 'no-store' } });
}
