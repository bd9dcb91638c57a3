// apache-arrow, loaded where a shard is encoded or decoded whole (harvest, convert, a file that cannot be read in
// place) and by `sdl query`, not where shards are read by range (fit, index, eval: arrow-layout.ts reads the
// footer itself): loading it took ~0.25 s of CPU and ~20 MiB at each such command's start.
import type * as Arrow from 'apache-arrow';
import { lazyModule } from '../util/lazy.js';

export const apacheArrow = lazyModule<typeof Arrow>('apache-arrow');
