#!/usr/bin/env node
// An example client of spool's protocol in Node.js. It speaks JSON-RPC 2.0 with
// LSP framing (Content-Length headers) through vscode-jsonrpc, the library of VS
// Code's language clients, to show that spoold works with a client library that
// spool did not write.
//
// It asks the daemon who it is, submits a job, follows the job's events until
// the watch says "done", prints the outcome, the result and the log, then shows
// how errors and $/cancelRequest look from a client.
//
// Usage:
//   npm ci
//   node spool-client.js [--socket PATH] [-- CMD [ARG...]]
//   node spool-client.js --spool PATH_TO_SPOOL [-- CMD [ARG...]]
//
// --socket dials the daemon's Unix socket (default: $SPOOL_SOCKET, else
// $XDG_RUNTIME_DIR/spool/spoold.sock, else /tmp/spool-UID/spoold.sock).
// --spool spawns `spool rpc` and talks over its standard input and output, the
// way an editor spawns a language server. The command defaults to
// `sh -c 'echo hello from node'`.
//
// Exit status: 0 when the job succeeded, 1 when it did not, 2 on a usage or
// connection error.
'use strict';

const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');
const rpc = require('vscode-jsonrpc/node');

function defaultSocket() {
  if (process.env.SPOOL_SOCKET) return process.env.SPOOL_SOCKET;
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'spool', 'spoold.sock');
  return `/tmp/spool-${process.getuid()}/spoold.sock`;
}

function parseArgs(argv) {
  const opts = { socket: null, spool: null, argv: ['sh', '-c', 'echo hello from node'] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--socket' && i + 1 < argv.length) opts.socket = argv[++i];
    else if (a === '--spool' && i + 1 < argv.length) opts.spool = argv[++i];
    else if (a === '--') {
      if (i + 1 < argv.length) opts.argv = argv.slice(i + 1);
      break;
    } else {
      throw new Error(`unknown argument ${a}`);
    }
  }
  return opts;
}

// connect returns a vscode-jsonrpc connection to the daemon: over its socket, or
// through a `spool rpc` child process.
async function connect(opts) {
  if (opts.spool) {
    const child = spawn(opts.spool, opts.socket ? ['--socket', opts.socket, 'rpc'] : ['rpc'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const conn = rpc.createMessageConnection(
      new rpc.StreamMessageReader(child.stdout),
      new rpc.StreamMessageWriter(child.stdin));
    return { conn, close: () => { conn.dispose(); child.stdin.end(); } };
  }
  const socketPath = opts.socket || defaultSocket();
  const sock = net.createConnection(socketPath);
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', (err) => reject(new Error(`connect to ${socketPath}: ${err.message}`)));
  });
  const conn = rpc.createMessageConnection(
    new rpc.StreamMessageReader(sock),
    new rpc.StreamMessageWriter(sock));
  return { conn, close: () => { conn.dispose(); sock.end(); } };
}

// describe formats a protocol error: its code, message and data.
function describe(err) {
  if (err instanceof rpc.ResponseError) {
    const data = err.data === undefined || err.data === null ? '' : ' ' + JSON.stringify(err.data);
    return `error ${err.code}: ${err.message}${data}`;
  }
  return String(err && err.message ? err.message : err);
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`spool-client: ${err.message}`);
    return 2;
  }
  let conn, close;
  try {
    ({ conn, close } = await connect(opts));
  } catch (err) {
    console.error(`spool-client: ${err.message}`);
    return 2;
  }

  // job.event notifications carry the token of their watch; route them to it.
  const watches = new Map();
  conn.onNotification('job.event', (params) => {
    const onEvent = watches.get(params.token);
    if (onEvent) onEvent(params.event);
  });
  conn.listen();

  try {
    const info = await conn.sendRequest('daemon.info', {});
    console.log(`daemon: spoold ${info.version} (protocol ${info.protocol}), pid ${info.pid}, socket ${info.socket}`);

    // Submit. Taking last_seq first and watching with since: last_seq replays any
    // event of the job that happened between the submit and the watch.
    const job = await conn.sendRequest('job.submit', {
      job: { name: 'from node', steps: [{ exec: { argv: opts.argv } }] },
    });
    console.log(`submitted: job ${job.id} (${job.state})`);

    const done = new Promise((resolve) => {
      watches.set('node', (ev) => {
        if (ev.type === 'done') {
          resolve();
          return;
        }
        const step = ev.step_name ? ` ${ev.step_name}` : '';
        const state = ev.state ? ` ${ev.state}` : '';
        console.log(`event: seq ${ev.seq} job ${ev.job} ${ev.type}${step}${state}`);
      });
    });
    const watch = await conn.sendRequest('job.watch', { jobs: [job.id], since: info.last_seq, token: 'node' });
    console.log(`watching: token ${watch.token} from seq ${info.last_seq}`);
    await done;
    watches.delete('node');

    const final = await conn.sendRequest('job.get', { id: job.id });
    console.log(`outcome: job ${final.id} ${final.state}${final.error ? ': ' + final.error : ''}`);
    console.log(`result: ${JSON.stringify(final.result)}`);
    const logs = await conn.sendRequest('job.logs', { id: job.id, step: 0 });
    process.stdout.write(`log:\n${logs.data}`);

    // Errors come back as ResponseError with the protocol's code and data.
    try {
      await conn.sendRequest('job.get', { id: 999999999 });
    } catch (err) {
      console.log(`job.get of an unknown id: ${describe(err)}`);
    }

    // A cancelled CancellationToken makes vscode-jsonrpc send $/cancelRequest:
    // the pending job.wait ends with -32800 (the job itself goes on).
    const sleeper = await conn.sendRequest('job.submit', { job: { steps: [{ sleep: { duration: '60s' } }] } });
    const source = new rpc.CancellationTokenSource();
    const waiting = conn.sendRequest('job.wait', { id: sleeper.id }, source.token);
    setTimeout(() => source.cancel(), 200);
    try {
      await waiting;
      console.log('job.wait: answered before the cancel');
    } catch (err) {
      console.log(`job.wait cancelled: ${describe(err)}`);
    }
    const cancelled = await conn.sendRequest('job.cancel', { id: sleeper.id, reason: 'example over' });
    console.log(`cancelled: job ${cancelled.id} ${cancelled.state}`);

    return final.state === 'succeeded' ? 0 : 1;
  } catch (err) {
    console.error(`spool-client: ${describe(err)}`);
    return 1;
  } finally {
    close();
  }
}

main().then((code) => { process.exitCode = code; });
