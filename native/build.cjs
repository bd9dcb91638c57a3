// Builds the native kernels (native/build/Release/sdlkit_*.node) with node-gyp, as `npm install` runs it.
// A failed build does not fail the install: sdlkit then trains with TensorFlow.js, and `sdl fit` says so.
// `npm run build:native` runs this again and shows the compiler's output.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const { dirname, join } = require('node:path');

// npm passes its bundled node-gyp to scripts; run directly, look for it next to this Node's npm.
const bundled = join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
const gyp = process.env.npm_config_node_gyp || (existsSync(bundled) ? bundled : undefined);
const cmd = gyp ? process.execPath : 'node-gyp';
// Build against this Node's own headers when it ships them (no download, which offline machines cannot do).
const prefix = join(dirname(process.execPath), '..');
const nodedir = process.env.npm_config_nodedir || (existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined);
const args = [...(gyp ? [gyp] : []), 'rebuild', '--directory', __dirname, ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
const verbose = process.argv.includes('--verbose') || process.env.npm_lifecycle_event === 'build:native';
const t0 = Date.now();
const r = spawnSync(cmd, args, { stdio: verbose ? 'inherit' : 'pipe', encoding: 'utf8' });
if (r.status === 0) {
  console.log(`sdlkit: native kernels built in ${((Date.now() - t0) / 1000).toFixed(0)} s (${join(__dirname, 'build', 'Release')})`);
} else {
  const why = r.error ? r.error.message : ((r.stderr || '') + (r.stdout || '')).trim().split('\n').filter(Boolean).slice(-3).join(' | ');
  console.warn(`sdlkit: WARNING: the native kernels did not build (${why || 'node-gyp exited with ' + r.status}). ` +
    'sdl fit and sdl index will use TensorFlow.js (several times slower). Run `npm run build:native` to see the full output.');
  if (process.argv.includes('--strict')) process.exit(1);
}
