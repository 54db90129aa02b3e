#!/usr/bin/env node
// Prisma's schema tooling without the Prisma CLI, whose engines are native binaries it downloads at
// run time (not possible here). The same engines' WebAssembly builds, pinned in package.json to
// Prisma 6.19.3's engine version, do the work:
//
//   node scripts/prisma.mjs validate SCHEMA   exit 1 with Prisma's error message (P1012) if invalid
//   node scripts/prisma.mjs lint SCHEMA       print the warnings (JSON) `prisma validate` would show
//   node scripts/prisma.mjs format SCHEMA     print the schema as `prisma format` writes it
//   node scripts/prisma.mjs dmmf SCHEMA       print get_dmmf's JSON (the client generator's input)
//   node scripts/prisma.mjs init-sql SCHEMA   print the migration.sql `prisma migrate dev` writes for
//                                             this schema as the first migration
//   node scripts/prisma.mjs diff SCHEMA OLD   print the SQL `prisma migrate dev` writes to go from
//                                             the schema OLD to SCHEMA (a later migration's start)
//
// init-sql: `migrate dev` diffs the schema against its shadow database, a fresh database with the
// migrations applied (none, for the first one) and so with an existing, empty `public` schema. The
// schema engine is asked for the same diff, from a schema with the same datasource and no model
// (`--from-empty` would also create `public`). Its WebAssembly build talks to PostgreSQL through a
// JavaScript driver adapter; for this diff it reads only the server version and never the data, so
// the adapter below answers that one query itself (PostgreSQL 15, the platform's) and refuses any
// other.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const [command, schemaPath, oldSchemaPath] = process.argv.slice(2);
const commands = { validate, lint, format, dmmf, 'init-sql': initSql, diff: diffSql };
if (!(command in commands) || !schemaPath || (command === 'diff') !== Boolean(oldSchemaPath)) {
  process.stderr.write(`usage: prisma.mjs ${Object.keys(commands).join('|')} SCHEMA [OLD (diff only)]\n`);
  process.exit(2);
}
const schema = readFileSync(schemaPath, 'utf8');

function schemaWasm() {
  // Where the wasm build reports a Rust panic (Prisma's CLI defines it): without it a panic surfaces
  // as a TypeError about this very object.
  globalThis.PRISMA_WASM_PANIC_REGISTRY ??= {
    set_message(message) {
      process.stderr.write(`prisma-schema-wasm panicked: ${message}\n`);
    },
  };
  return require('@prisma/prisma-schema-wasm');
}

// The wasm functions throw a JSON string: {"error_code": "P1012", "message": "..."}.
function fail(error) {
  let message = String(error?.message ?? error);
  try {
    message = JSON.parse(message).message;
  } catch {
    // not JSON: a plain JavaScript error
  }
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

function validate() {
  try {
    schemaWasm().validate(JSON.stringify({ prismaSchema: schema, noColorErrors: true }));
  } catch (error) {
    fail(error);
  }
}

function lint() {
  const warnings = JSON.parse(schemaWasm().lint(JSON.stringify([[schemaPath, schema]])));
  process.stdout.write(`${JSON.stringify(warnings.map(({ text, is_warning }) => ({ text: text.trim(), is_warning })))}\n`);
}

function format() {
  // LSP DocumentFormattingParams; Prisma's own settings (two spaces).
  const params = { textDocument: { uri: 'file:/dev/null' }, options: { tabSize: 2, insertSpaces: true } };
  process.stdout.write(schemaWasm().format(schema, JSON.stringify(params)));
}

function dmmf() {
  try {
    process.stdout.write(schemaWasm().get_dmmf(JSON.stringify({ prismaSchema: schema, noColorErrors: true })));
  } catch (error) {
    fail(error);
  }
}

const SERVER_VERSION = { text: 'PostgreSQL 15', number: 150000 };

// A driver adapter (@prisma/driver-adapter-utils' shape: results wrapped as {ok, value}) that
// answers the schema engine's version probe and nothing else.
function versionOnlyAdapter() {
  const refuse = async (query) => {
    throw new Error(`init-sql needs no database, yet the engine sent: ${query?.sql ?? query}`);
  };
  const connection = {
    provider: 'postgres',
    adapterName: 'tenantforge-version-only',
    async queryRaw(query) {
      if (!/\bversion\(\)/.test(query.sql)) return refuse(query);
      // Columns: public exists (boolean), version() (text), server_version_num (int32).
      const rows = [[true, SERVER_VERSION.text, SERVER_VERSION.number]];
      return { ok: true, value: { columnNames: ['exists', 'version', 'numeric_version'], columnTypes: [5, 7, 0], rows } };
    },
    executeRaw: refuse,
    executeScript: refuse,
    startTransaction: refuse,
    getConnectionInfo: () => ({ ok: true, value: { schemaName: 'public', supportsRelationJoins: true } }),
    dispose: async () => ({ ok: true, value: undefined }),
  };
  return {
    provider: 'postgres',
    adapterName: 'tenantforge-version-only',
    connect: async () => ({ ok: true, value: connection }),
    connectToShadowDb: async () => ({ ok: true, value: connection }),
  };
}

async function schemaEngine() {
  // The package's entry point imports the .wasm file as an ES module, which Node cannot do without
  // a flag: instantiate it from the wasm-bindgen glue instead.
  const glue = require.resolve('@prisma/schema-engine-wasm/schema_engine_bg');
  const bindings = await import(glue);
  const bytes = readFileSync(glue.replace(/\.js$/, '.wasm'));
  const { instance } = await WebAssembly.instantiate(bytes, { './schema_engine_bg.js': bindings });
  bindings.__wbg_set_wasm(instance.exports);
  instance.exports.__wbindgen_start();
  return bindings.SchemaEngine;
}

async function initSql() {
  const datasource = schema.match(/^datasource\s+\w+\s*\{[^}]*\}/m);
  if (!datasource) fail(`${schemaPath}: no datasource block`);
  await diffFrom('shadow.prisma', `${datasource[0]}\n`);
}

async function diffSql() {
  await diffFrom(oldSchemaPath, readFileSync(oldSchemaPath, 'utf8'));
}

async function diffFrom(fromPath, fromSchema) {
  validate();
  const SchemaEngine = await schemaEngine();
  const engine = await SchemaEngine.new({ datamodels: [[schemaPath, schema]] }, () => {}, versionOnlyAdapter());
  const result = await engine.diff({
    from: { tag: 'schemaDatamodel', files: [{ path: fromPath, content: fromSchema }] },
    to: { tag: 'schemaDatamodel', files: [{ path: schemaPath, content: schema }] },
    shadowDatabaseUrl: null,
    script: true,
    exitCode: null,
    filters: { externalTables: [], externalEnums: [] },
  });
  process.stdout.write(result.stdout);
}

await commands[command]();
