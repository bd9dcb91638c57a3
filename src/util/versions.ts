// Versions of sdlkit and the libraries that shape its artifacts, recorded in every manifest.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

function versionOf(pkg: string): string {
  try {
    return (require(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return 'absent';
  }
}

export function versions(): Record<string, string> {
  return {
    sdlkit: (require('../../../package.json') as { version: string }).version,
    node: process.versions.node,
    'onnxruntime-node': versionOf('onnxruntime-node'),
    'apache-arrow': versionOf('apache-arrow'),
  };
}
