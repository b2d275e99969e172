// autocannon with a fresh id per request: node load.mjs < '{"url": ..., "key": ..., "body": "...__ID__...",
// "connections": 32, "duration": 10, "accounts": [...]}' (on stdin: a 1000-item batch is more than an argument
// may hold) prints autocannon's JSON result; `__ACCOUNT__` in the
// body becomes the next of `accounts` in turn. (autocannon's own -I flag sends a
// content-length computed before the id is put in, which a strict HTTP server rightly stalls on.)
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';

const config = JSON.parse(readFileSync(0, 'utf8'));
let counter = 0;
const run = process.hrtime.bigint().toString(36);
const headers = { 'content-type': 'application/json' };
if (config.key) headers.authorization = `Bearer ${config.key}`;
const result = await autocannon({
  url: config.url,
  connections: config.connections,
  duration: config.duration,
  method: 'POST',
  headers,
  requests: [{
    setupRequest(request) {
      counter += 1;
      request.body = config.body.replaceAll('__ID__', `${run}-${counter}`);
      if (config.accounts.length) {
        request.body = request.body.replaceAll('__ACCOUNT__', config.accounts[counter % config.accounts.length]);
      }
      return request;
    },
  }],
});
console.log(JSON.stringify(result));
