// The feature index's tables, indexed for the lookup queries (sort by frequency or maximum, dead/dense filters,
// features of a token, examples and neighbours of a feature). Tables keyed by several columns are WITHOUT ROWID (one
// B-tree each, not a table and its key's index); the secondary indexes are made after the rows are in (INDEXES).
export const SCHEMA = `
create table dictionary (key text primary key, value text not null);
create table features (
  id integer primary key,
  count integer not null,
  freq real not null,
  mean_act real not null,
  max_act real not null,
  decoder_norm real not null,
  enc_dec_cos real,
  dead integer not null,
  dense integer not null,
  histogram text not null,
  top_tokens text not null,
  absorption real,
  logit_lens text
);
create table examples (
  feature integer not null, rank integer not null, act real not null, doc integer, window integer, pos integer, token integer,
  context_start integer, context_tokens text not null, context_acts text not null,
  primary key (feature, rank)
) without rowid;
create table quantile_examples (
  feature integer not null, band integer not null, rank integer not null, act real not null, doc integer, window integer, pos integer,
  token integer, context_start integer, context_tokens text not null, context_acts text not null,
  primary key (feature, band, rank)
) without rowid;
create table site_norms (feature integer not null, site integer not null, norm real not null, primary key (feature, site)) without rowid;
create table neighbors (feature integer not null, rank integer not null, other integer not null, cosine real not null, primary key (feature, rank)) without rowid;
create table cooccurrence (feature integer not null, other integer not null, count integer not null, jaccard real not null, primary key (feature, other)) without rowid;
create table token_features (token integer not null, feature integer not null, count integer not null, mean_act real not null, primary key (token, feature)) without rowid;
create table tokens (id integer primary key, text text not null);
create table absorption_letters (letter text primary key, probe_f1 real not null, main_latents text not null, main_f1 real not null, tokens integer not null, mean_absorption real not null, full_absorption_rate real not null);
`;

/** Secondary indexes, built once the tables are filled (faster than keeping them up to date row by row). */
export const INDEXES = `
create index features_freq on features (freq);
create index features_max on features (max_act);
create index features_dead on features (dead) where dead = 1;
create index features_dense on features (dense) where dense = 1;
create index features_absorption on features (absorption) where absorption > 0;
`;

/** token_features' secondary index, made as soon as its rows are in (before the per-feature rows arrive). */
export const TOKEN_FEATURES_INDEX = 'create index token_features_feature on token_features (feature);';
