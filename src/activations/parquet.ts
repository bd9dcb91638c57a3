// parquet-wasm (Rust's arrow and parquet crates compiled to WebAssembly), for the commands that read or write Parquet.
import type * as ParquetWasm from 'parquet-wasm';
import { lazyModule } from '../util/lazy.js';

export const parquetWasm = lazyModule<typeof ParquetWasm>('parquet-wasm');
