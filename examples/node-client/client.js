#!/usr/bin/env node
// A Node.js client of the Open-AutoGLM gateway, built only from the .proto contract
// (@grpc/proto-loader + @grpc/grpc-js, no generated code).
//
//   node examples/node-client/client.js --gateway 127.0.0.1:50051 [--spec spec.json] [--wait]
//   node examples/node-client/client.js --gateway 127.0.0.1:50051 --serve reviews.jsonl
//
// Creates a study, reads its state back with GetStudy (and with --wait follows WatchStudy until
// the study ends), and prints one JSON object with what it saw. With --serve it goes from data
// to a served model: uploads the JSONL dataset (Artifacts.UploadArtifact, client streaming, with
// its sha256), runs the study on it, waits for its best trial to be registered, downloads the
// version (checking every file's sha256), deploys it and calls Predict on the evaluation inputs
// shipped in the version, comparing the answers with the trial's own predictions.
'use strict';

const crypto = require('crypto');
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
  const args = { gateway: process.env.OPENAUTOGLM_GATEWAY || '127.0.0.1:50051', spec: null, wait: false, serve: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--gateway') args.gateway = argv[++i];
    else if (argv[i] === '--serve') args.serve = argv[++i];
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

// The public services, from the .proto files alone; one channel shared by the three clients.
function loadClients(address) {
  const definition = protoLoader.loadSync(['studies', 'artifacts', 'models'].map((p) => path.join(PROTO_ROOT, `openautoglm/v1/${p}.proto`)), {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition).openautoglm.v1;
  const options = { interceptors: [withApiKey(apiKey())] };
  const studies = new pkg.Studies(address, channelCredentials(), options);
  const channelOverride = studies.getChannel();
  return {
    studies,
    artifacts: new pkg.Artifacts(address, channelCredentials(), { ...options, channelOverride }),
    models: new pkg.Models(address, channelCredentials(), { ...options, channelOverride }),
  };
}

// Client streaming: the header (kind, name, sha256, size), then the bytes in 1 MiB chunks.
function upload(client, file) {
  const data = fs.readFileSync(file);
  const sha256 = crypto.createHash('sha256').update(data).digest('hex');
  return new Promise((resolve, reject) => {
    const call = client.UploadArtifact({ deadline: new Date(Date.now() + 300000) }, (err, reply) => (err ? reject(err) : resolve(reply.artifact)));
    call.write({ header: { kind: 'ARTIFACT_KIND_DATASET', name: path.basename(file), sha256, size_bytes: String(data.length) } });
    for (let start = 0; start < data.length; start += 1 << 20) call.write({ chunk: data.subarray(start, start + (1 << 20)) });
    call.end();
  });
}

// Server streaming: each file's first message names it (path, size, sha256), its bytes follow.
function download(client, model) {
  return new Promise((resolve, reject) => {
    const files = {};
    let current = null;
    const finish = () => {
      if (!current) return;
      const bytes = Buffer.concat(current.parts);
      const digest = crypto.createHash('sha256').update(bytes).digest('hex');
      if (digest !== current.file.sha256) throw new Error(`${current.file.path}: sha256 ${digest}, manifest says ${current.file.sha256}`);
      files[current.file.path] = bytes;
    };
    const call = client.DownloadModel({ model }, { deadline: new Date(Date.now() + 300000) });
    call.on('data', (part) => {
      try {
        if (part.file) { finish(); current = { file: part.file, parts: [] }; } else current.parts.push(part.chunk);
      } catch (err) { call.cancel(); reject(err); }
    });
    call.on('error', reject);
    call.on('end', () => { try { finish(); resolve(files); } catch (err) { reject(err); } });
  });
}

async function registeredBest(models, study) {
  const deadline = Date.now() + 300000;
  while (Date.now() < deadline) {
    const { models: versions } = await unary(models, 'ListModels', { name: study.spec.name });
    const version = versions.find((v) => v.study_id === study.id);
    if (version && version.state === 'MODEL_VERSION_STATE_READY') return version;
    if (version && version.state === 'MODEL_VERSION_STATE_FAILED') throw new Error(`registration failed: ${version.error}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error('the best model was not registered in time');
}

async function serve(clients, datasetFile) {
  const artifact = await upload(clients.artifacts, datasetFile);
  const spec = { ...DEFAULT_SPEC, name: 'node-served', dataset: { artifact: artifact.id } };
  const created = (await unary(clients.studies, 'CreateStudy', { spec })).study;
  const { study } = await watchUntilDone(clients.studies, created.id);
  if (study.state !== 'STUDY_STATE_COMPLETED') throw new Error(`study ended ${study.state}: ${study.error}`);
  const version = await registeredBest(clients.models, study);
  const model = { name: version.name, version: version.version };
  const files = await download(clients.models, model);
  await unary(clients.models, 'Deploy', { model });
  const evaluated = files['eval_predictions.jsonl'].toString('utf8').trim().split('\n').map((line) => JSON.parse(line));
  const { predictions } = await unary(clients.models, 'Predict', { model, inputs: evaluated.map((row) => row.input) });
  return {
    artifact_id: artifact.id,
    artifact_sha256: artifact.sha256,
    study_id: study.id,
    model: version.name,
    version: version.version,
    best_trial_id: study.best_trial_id,
    registered_trial_id: version.trial_id,
    files_checked: Object.keys(files).length,
    predicted: predictions.length,
    equal_to_trial: predictions.every((p, i) => p.label === evaluated[i].prediction),
    labels: predictions.map((p) => p.label),
  };
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
  const clients = loadClients(args.gateway);
  if (args.serve) {
    console.log(JSON.stringify(await serve(clients, args.serve)));
    clients.studies.close();
    return;
  }
  const spec = args.spec ? JSON.parse(fs.readFileSync(args.spec, 'utf8')) : DEFAULT_SPEC;
  const client = clients.studies;
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
