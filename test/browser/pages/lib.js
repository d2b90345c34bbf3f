// lib.js: what every test page shares. A page calls run(async (r) => {...}):
// it records what it saw in r (the result object) and run publishes
// r as window.testResult when the body ends, with r.error set when it threw,
// so the Go test sees how far the page got. Pages assert nothing about
// the gateway themselves: they report exact bytes and texts, and the Go
// test compares them with what it expects.

/** The page's query parameters. */
const params = new URLSearchParams(location.search);

/** param returns a query parameter that must be there. */
function param(name) {
  const v = params.get(name);
  if (v === null) throw new Error(`missing query parameter ${name}`);
  return v;
}

function run(body) {
  const r = { origin: location.origin };
  body(r).then(
    () => { window.testResult = r; },
    (e) => { r.error = String(e && e.stack || e); window.testResult = r; });
}

/** hook asks the test (this page's own origin) to act, and returns its answer. */
async function hook(name, body = '') {
  const resp = await fetch('/hook/' + name, { method: 'POST', body });
  const text = await resp.text();
  if (!resp.ok) throw new Error(`hook ${name}: ${resp.status} ${text}`);
  return text;
}

/**
 * open connects a WebSocket and queues what it receives, so a page can
 * read messages in order: await s.next(). It resolves once open.
 */
function open(url, protocols, binaryType = 'blob') {
  return new Promise((resolve, reject) => {
    const ws = protocols === undefined ? new WebSocket(url) : new WebSocket(url, protocols);
    ws.binaryType = binaryType;
    const queue = [], waiting = [];
    let closed = null;
    const s = {
      ws,
      /** next resolves with the next message's data, or rejects if the socket closes first or nothing comes in 10 s. */
      next() {
        if (queue.length) return Promise.resolve(queue.shift());
        if (closed) return Promise.reject(closed);
        return new Promise((res, rej) => {
          const w = { res, rej };
          w.timer = setTimeout(() => { waiting.splice(waiting.indexOf(w), 1); rej(new Error(`${url}: no message in 10 s`)); }, 10000);
          waiting.push(w);
        });
      },
      send(data) { ws.send(data); },
      close() { ws.close(1000); },
    };
    ws.onopen = () => resolve(s);
    ws.onmessage = (ev) => {
      const w = waiting.shift();
      if (w) { clearTimeout(w.timer); w.res(ev.data); } else queue.push(ev.data);
    };
    ws.onerror = () => reject(new Error(`${url}: WebSocket error before open`));
    ws.onclose = (ev) => {
      closed = new Error(`${url}: closed ${ev.code} ${JSON.stringify(ev.reason)}`);
      reject(closed);
      for (const w of waiting.splice(0)) { clearTimeout(w.timer); w.rej(closed); }
    };
  });
}

/** hex is the lowercase hex of an ArrayBuffer or Uint8Array. */
function hex(buf) {
  return Array.from(new Uint8Array(buf.buffer ? buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) : buf),
    (b) => b.toString(16).padStart(2, '0')).join('');
}

/** unhex is the bytes of a hex string. */
function unhex(s) {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

/** fetchText makes a request and reports status, Content-Type and body. */
async function fetchText(url, init) {
  const resp = await fetch(url, init);
  return { status: resp.status, type: resp.headers.get('Content-Type'), body: await resp.text() };
}
