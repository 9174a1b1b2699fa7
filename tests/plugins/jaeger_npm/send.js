// Sends spans with the npm jaeger-client to a collector endpoint (HTTP, binary Thrift,
// chunked transfer encoding) and prints what it sent as JSON.
// Usage: node send.js http://127.0.0.1:PORT/api/traces
// (JAEGER_USERNAME / JAEGER_PASSWORD: Basic authentication; NODE_EXTRA_CA_CERTS for https)
'use strict';
const { initTracer, opentracing } = require('jaeger-client');

const endpoint = process.argv[2];
const quiet = { info() {}, error(msg) { process.stderr.write(String(msg) + '\n'); } };
const tracer = initTracer(
  {
    serviceName: 'npm-jaeger-svc',
    sampler: { type: 'const', param: 1 },
    reporter: {
      collectorEndpoint: endpoint,
      flushIntervalMs: 100,
      ...(process.env.JAEGER_USERNAME ? { username: process.env.JAEGER_USERNAME } : {}),
      ...(process.env.JAEGER_PASSWORD ? { password: process.env.JAEGER_PASSWORD } : {}),
    },
  },
  { logger: quiet, traceId128bit: true, tags: { 'deployment.environment': 'test' } },
);

function describe(span, refs) {
  const ctx = span.context();
  return {
    name: span.operationName,
    trace_id: ctx.traceIdStr.padStart(32, '0'),
    span_id: ctx.spanIdStr.padStart(16, '0'),
    parent_id: ctx.parentIdStr ? ctx.parentIdStr.padStart(16, '0') : null,
    start_ms: span._startTime,
    tags: Object.fromEntries(span._tags.map((t) => [t.key, t.value])),
    logs: span._logs.map((l) => ({
      ts_ms: l.timestamp,
      fields: Object.fromEntries(l.fields.map((f) => [f.key, f.value])),
    })),
    references: refs,
  };
}

const root = tracer.startSpan('GET /orders', { tags: { 'span.kind': 'server', 'http.status_code': 200 } });
root.setTag('ratio', 0.5);
root.setTag('cached', false);
root.log({ event: 'order-loaded', id: 'o-1' });
const child = tracer.startSpan('SELECT orders', { childOf: root, tags: { 'span.kind': 'client' } });
child.setTag('error', true);
child.finish();
const linked = tracer.startSpan('audit', {
  references: [opentracing.followsFrom(root.context())],
});
linked.finish();
root.finish();
const sent = [
  describe(root, []),
  describe(child, []),
  describe(linked, [{ type: 'follows_from', span_id: root.context().spanIdStr.padStart(16, '0') }]),
];
for (const [i, s] of [root, child, linked].entries()) sent[i].duration_ms = s._duration;
tracer.close(() => {
  process.stdout.write(JSON.stringify(sent) + '\n');
});
