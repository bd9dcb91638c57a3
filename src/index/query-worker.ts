// Runs one index query in a child process, so the command can give up on it after --timeout: SQLite's loop runs
// inside a native call that nothing can interrupt from JavaScript (a worker thread stuck there even keeps the
// process from exiting), while a child process can always be killed.
import { listFeatures, openIndex, runSql, type FeatureQuery } from './query.js';
import { UserError } from '../util/errors.js';

process.once('message', (job: { dir: string; sql?: string; features?: FeatureQuery }) => {
  try {
    const db = openIndex(job.dir);
    const rows = job.sql !== undefined ? runSql(db, job.sql) : listFeatures(db, job.features!);
    process.send!({ rows }, () => process.exit(0));
  } catch (e) {
    process.send!({ error: (e as Error).message, user: e instanceof UserError }, () => process.exit(0));
  }
});
