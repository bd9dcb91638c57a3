// Heavy packages loaded on first use rather than at start-up, so that a command pays only for what it runs (measured
// resident memory on import: onnxruntime-node 4 MB of a 46 MB library, parquet-wasm 17 MB, DuckDB 10 MB).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** A getter that requires the package the first time it is called and returns the same module after. */
export function lazyModule<T>(name: string): () => T {
  let loaded: T | undefined;
  return () => {
    loaded ??= require(name) as T;
    return loaded;
  };
}
