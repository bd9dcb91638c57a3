// parquet-wasm (Rust's arrow and parquet crates compiled to WebAssembly): reads the compressed Parquet shards that
// sdlkit wrote before it wrote its own (parquet-shard.ts), and writes the feature index's tables for `sdl query`.
import type * as ParquetWasm from 'parquet-wasm';
import { lazyModule } from '../util/lazy.js';

export const parquetWasm = lazyModule<typeof ParquetWasm>('parquet-wasm');
