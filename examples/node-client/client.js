#!/usr/bin/env node
// A Node.js client of the Open-AutoGLM gateway, built only from the .proto contract
// (@grpc/proto-loader + @grpc/grpc-js, no generated code).
//
//   node examples/node-client/client.js --gateway 127.0.0.1:50051 [--spec spec.json] [--wait]
//
// Creates a study, reads its state back with GetStudy (and with --wait follows WatchStudy until
// the study ends), and prints one JSON object with what it saw.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');

const DEFAULT_SPEC = {
  name: 'node-client-demo',
  task: 'TASK_TYPE_CLASSIFICATION',
  dataset: { builtin: 'sentiment-demo', max_examples: 200 },
  model: { builtin: 'tiny' },
  search_space: {
    templates: [
      { id: 'plain', text: 'Review: {input} Sentiment:' },
      { id: 'asked', text: '{question} {input}' },
    ],
    variables: [{ name: 'question', values: ['How does this feel?'] }],
    hyperparameters: [{ name: 'epochs', choice: { values: [{ integer: 1 }] } }],
  },
  objective: { terms: [{ metric: 'accuracy', weight: 1.0 }], direction: 'DIRECTION_MAXIMIZE' },
  strategy: 'grid',
  budget: { max_trials: 2 },
  seed: 1,
};

function parseArgs(argv) {
  const args = { gateway: process.env.OPENAUTOGLM_GATEWAY || '127.0.0.1:50051', spec: null, wait: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--gateway') args.gateway = argv[++i];
    else if (argv[i] === '--spec') args.spec = argv[++i];
    else if (argv[i] === '--wait') args.wait = true;
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return args;
}

// The API key: $OPENAUTOGLM_API_KEY, else the one `openautoglm up` wrote in its data dir.
function apiKey() {
  if (process.env.OPENAUTOGLM_API_KEY) return process.env.OPENAUTOGLM_API_KEY.trim();
  const dataDir = process.env.OPENAUTOGLM_DATA_DIR || path.join(os.homedir(), '.openautoglm');
  try {
    return fs.readFileSync(path.join(dataDir, 'api-key'), 'utf8').trim();
  } catch (err) {
    throw new Error(`no API key: set OPENAUTOGLM_API_KEY or run \`openautoglm up\` (it writes ${dataDir}/api-key)`);
  }
}

// TLS to the gateway: plaintext only when asked for ($OPENAUTOGLM_PLAINTEXT, a loopback gateway
// started with --plaintext); the server's certificate is checked against $OPENAUTOGLM_CA_CERT,
// else the CA `openautoglm up` wrote ($OPENAUTOGLM_DATA_DIR/tls/ca.crt), else the system's roots.
function channelCredentials() {
  if (['1', 'true', 'yes'].includes((process.env.OPENAUTOGLM_PLAINTEXT || '').trim().toLowerCase())) {
    return grpc.credentials.createInsecure();
  }
  const dataDir = process.env.OPENAUTOGLM_DATA_DIR || path.join(os.homedir(), '.openautoglm');
  const caFile = (process.env.OPENAUTOGLM_CA_CERT || '').trim() || path.join(dataDir, 'tls', 'ca.crt');
  if (fs.existsSync(caFile)) return grpc.credentials.createSsl(fs.readFileSync(caFile));
  if (process.env.OPENAUTOGLM_CA_CERT) throw new Error(`OPENAUTOGLM_CA_CERT: no file ${caFile}`);
  return grpc.credentials.createSsl();
}

// Every call carries `authorization: Bearer <key>`.
function withApiKey(key) {
  return (options, nextCall) => new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.set('authorization', `Bearer ${key}`);
      next(metadata, listener);
    },
  });
}

function loadStudiesClient(address) {
  const definition = protoLoader.loadSync(path.join(PROTO_ROOT, 'openautoglm/v1/studies.proto'), {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition).openautoglm.v1;
  return new pkg.Studies(address, channelCredentials(), { interceptors: [withApiKey(apiKey())] });
}

function unary(client, method, request) {
  const deadline = new Date(Date.now() + 30000);
  return new Promise((resolve, reject) => {
    client[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

function watchUntilDone(client, studyId) {
  return new Promise((resolve, reject) => {
    const changes = [];
    let last = null;
    const call = client.WatchStudy({ study_id: studyId }, { deadline: new Date(Date.now() + 300000) });
    call.on('data', (update) => { changes.push(update.change); last = update.study; });
    call.on('error', reject);
    call.on('end', () => resolve({ changes, study: last }));
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const spec = args.spec ? JSON.parse(fs.readFileSync(args.spec, 'utf8')) : DEFAULT_SPEC;
  const client = loadStudiesClient(args.gateway);
  const created = (await unary(client, 'CreateStudy', { spec })).study;
  const fetched = (await unary(client, 'GetStudy', { study_id: created.id })).study;
  const out = {
    study_id: created.id,
    trace_id: created.trace_id,
    created_state: created.state,
    fetched_state: fetched.state,
    fetched_name: fetched.spec.name,
  };
  if (args.wait) {
    const { changes, study } = await watchUntilDone(client, created.id);
    out.final_state = study.state;
    out.changes = changes;
    out.trials = study.trials.map((t) => ({ id: t.id, status: t.status, metrics: t.metrics, prompt: t.candidate.prompt }));
    out.best_trial_id = study.best_trial_id;
  }
  client.close();
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(`error: ${err.code !== undefined ? grpc.status[err.code] + ': ' : ''}${err.details || err.message}`);
  process.exit(1);
});
