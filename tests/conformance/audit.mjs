// Runs the graphql-http audits against URL (argv[2]) with the API key (argv[3]) and prints one JSON line per audit.
import { auditServer } from 'graphql-http';

const [url, key] = process.argv.slice(2);
const fetchWithKey = (input, init = {}) => {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${key}`);
  return fetch(input, { ...init, headers });
};
const results = await auditServer({ url, fetchFn: fetchWithKey });
for (const result of results) {
  const line = { id: result.id, name: result.name, status: result.status, reason: result.reason ?? null };
  if (result.status !== 'ok' && result.response) {
    line.responseStatus = result.response.status;
    line.contentType = result.response.headers.get('content-type');
    try { line.body = (await result.response.text()).slice(0, 300); } catch { line.body = null; }
  }
  console.log(JSON.stringify(line));
}
