// GET /api/db: one real write against the replica set, or a JSON 503 within ~2 s.
import { dbHit } from '../../../lib/db.mjs';

export const dynamic = 'force-dynamic';

export async function GET() {
  try {
    const result = await dbHit();
    return Response.json({ ok: true, ...result }, { headers: { 'cache-control': 'no-store' } });
  } catch (err) {
    const retryAfterS = Math.max(1, Math.ceil((err.retryAfterMs ?? 3000) / 1000));
    return Response.json(
      { ok: false, error: 'database_unavailable', detail: err.message },
      { status: 503, headers: { 'cache-control': 'no-store', 'retry-after': String(retryAfterS) } },
    );
  }
}
