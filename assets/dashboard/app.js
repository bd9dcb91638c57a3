// sdlkit's feature dashboard: plain JavaScript, no dependencies, no network. Data arrive as script files calling
// SDL.load(key, value) (so the pages work from file://); `sdl serve` adds /api/run and /api/steer.

const SDL = (() => {
  const cache = new Map();
  const waiting = new Map();
  return {
    load(key, value) {
      cache.set(key, value);
      (waiting.get(key) || []).forEach((w) => w.ok(value));
      waiting.delete(key);
    },
    get(key) {
      if (cache.has(key)) return Promise.resolve(cache.get(key));
      return new Promise((ok, fail) => {
        const first = !waiting.has(key);
        if (first) waiting.set(key, []);
        waiting.get(key).push({ ok, fail });
        if (!first) return;
        const s = document.createElement('script');
        s.src = `data/${key}.js`;
        s.onerror = () => {
          (waiting.get(key) || []).forEach((w) => w.fail(new Error(`no data ${key}`)));
          waiting.delete(key);
        };
        document.head.appendChild(s);
      });
    },
  };
})();
window.SDL = SDL;

// ---------- small helpers ----------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity))
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
const fmt = (v, d = 3) =>
  v === null || v === undefined || Number.isNaN(v) ? '–' : Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : (+v).toFixed(d);
const pct = (v) => (v === null || v === undefined ? '–' : `${(100 * v).toFixed(1)}%`);
const app = () => document.getElementById('app');
const state = { dicts: [], live: false, vocab: {} };
// Token text as shown: line breaks and tabs made visible, so a token never breaks a row.
const tokText = (key, t) => (state.vocab[key] && state.vocab[key][t] !== undefined ? state.vocab[key][t] : `<${t}>`).replace(/\n/g, '↵').replace(/\t/g, '⇥');

function svg(w, hgt, children) {
  const s = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  s.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  s.setAttribute('width', '100%');
  s.innerHTML = children;
  return s;
}
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

/** A line chart of ys over xs (nulls skipped). */
function lineChart(title, xs, ys, opts = {}) {
  const pts = xs.map((x, i) => [x, ys[i]]).filter((p) => p[1] !== null && Number.isFinite(p[1]));
  const W = 300,
    H = 130,
    L = 40,
    B = 18;
  if (!pts.length) return h('div', {}, h('div', { class: 'chart-title' }, title), h('p', { class: 'muted' }, 'no data'));
  const x0 = Math.min(...pts.map((p) => p[0])),
    x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = Math.min(...pts.map((p) => p[1])),
    y1 = Math.max(...pts.map((p) => p[1]));
  if (opts.zero) y0 = Math.min(0, y0);
  if (y1 === y0) y1 = y0 + 1;
  const sx = (x) => L + ((x - x0) / Math.max(1e-9, x1 - x0)) * (W - L - 6),
    sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - B - 8);
  const path = pts.map((p, i) => `${i ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join('');
  const body =
    `<line x1="${L}" y1="${H - B}" x2="${W}" y2="${H - B}" stroke="#ccc"/><line x1="${L}" y1="4" x2="${L}" y2="${H - B}" stroke="#ccc"/>` +
    `<path d="${path}" fill="none" stroke="#d9480f" stroke-width="1.6"/>` +
    (pts.length < 12
      ? pts
          .map(
            (p) =>
              `<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="2.5" fill="#d9480f"><title>${esc(p[0])}: ${esc(fmt(p[1], 4))}</title></circle>`,
          )
          .join('')
      : '') +
    `<text x="${L - 4}" y="${sy(y1) + 4}" text-anchor="end">${esc(fmt(y1, 2))}</text><text x="${L - 4}" y="${H - B}" text-anchor="end">${esc(fmt(y0, 2))}</text>` +
    `<text x="${L}" y="${H - 4}">${esc(x0)}</text><text x="${W - 4}" y="${H - 4}" text-anchor="end">${esc(x1)} ${esc(opts.xlabel || 'steps')}</text>`;
  return h('div', { class: 'chart' }, h('div', { class: 'chart-title' }, title), svg(W, H, body));
}

/** A bar chart of counts with labels under the first, middle and last bars. */
function barChart(title, counts, labels, opts = {}) {
  const W = 300,
    H = 130,
    B = 18,
    L = 30;
  const max = Math.max(1, ...counts);
  const bw = (W - L - 4) / Math.max(1, counts.length);
  let body = `<line x1="${L}" y1="${H - B}" x2="${W}" y2="${H - B}" stroke="#ccc"/>`;
  counts.forEach((c, i) => {
    const bh = (opts.log ? Math.log1p(c) / Math.log1p(max) : c / max) * (H - B - 8);
    body += `<rect x="${(L + i * bw + 0.5).toFixed(1)}" y="${(H - B - bh).toFixed(1)}" width="${Math.max(1, bw - 1).toFixed(1)}" height="${bh.toFixed(1)}" fill="${opts.color || '#1c7ed6'}"><title>${esc(labels[i])}: ${c}</title></rect>`;
  });
  const mark = (i, anchor) => `<text x="${(L + (i + 0.5) * bw).toFixed(1)}" y="${H - 4}" text-anchor="${anchor}">${esc(labels[i])}</text>`;
  if (counts.length) body += mark(0, 'start') + mark(Math.floor(counts.length / 2), 'middle') + mark(counts.length - 1, 'end');
  body += `<text x="${L - 4}" y="12" text-anchor="end">${max}</text>`;
  return h('div', { class: 'chart' }, h('div', { class: 'chart-title' }, title), svg(W, H, body));
}

/** Tokens of a context, each coloured by the feature's activation (value on hover), the firing token outlined. */
function context(key, tokens, acts, at, max) {
  return h(
    'div',
    { class: 'ctx' },
    tokens.map((t, i) => {
      const a = acts[i] || 0;
      const alpha = max > 0 ? Math.min(1, Math.abs(a) / max) : 0;
      return h(
        'span',
        {
          class: i === at ? 'at' : undefined,
          title: `${JSON.stringify(tokText(key, t))}: ${fmt(a, 4)}`,
          'data-act': a,
          style: `background: rgba(var(${a >= 0 ? '--hot' : '--cold'}), ${(0.85 * alpha).toFixed(3)})`,
        },
        tokText(key, t),
      );
    }),
  );
}

// ---------- pages ----------
function nav(current, key) {
  const el = document.getElementById('nav');
  el.replaceChildren();
  if (state.dicts.length > 1) {
    const sel = h(
      'select',
      {
        onchange: (e) => {
          location.hash = `#/${e.target.value}`;
        },
      },
      state.dicts.map((d) => h('option', { value: d.key, selected: d.key === key }, d.name)),
    );
    el.append(sel);
  }
  const k = key || state.dicts[0].key;
  el.append(h('a', { href: `#/${k}`, class: current === 'overview' ? 'on' : undefined }, 'Overview'));
  el.append(h('a', { href: `#/${k}/features`, class: current === 'features' ? 'on' : undefined }, 'Features'));
  if (state.dicts.length > 1) el.append(h('a', { href: '#/compare', class: current === 'compare' ? 'on' : undefined }, 'Compare'));
}

async function overviewPage(key) {
  const ov = await SDL.get(`${key}/overview`);
  state.vocab[key] = ov.vocab;
  nav('overview', key);
  const c = ov.config,
    held = ov.heldOut || {},
    inm = ov.inModel,
    tr = ov.training || {};
  const stat = (label, value) => h('div', { class: 'stat' }, h('b', {}, value), h('span', {}, label));
  // log10 frequency histogram, bins of 0.25 from -7 to 0
  const bins = new Array(28).fill(0);
  let dead = 0;
  for (const f of ov.logFreq) {
    if (f === null) dead++;
    else bins[Math.max(0, Math.min(27, Math.floor((f + 7) / 0.25)))]++;
  }
  const binLabels = bins.map((_, i) => (-7 + i * 0.25).toFixed(2));
  const l0 = ov.l0Histogram;
  const page = h(
    'div',
    {},
    h('h1', {}, ov.name),
    h(
      'div',
      { class: 'muted' },
      `${c.kind} · ${c.activation}${['topk', 'batchtopk', 'matryoshka'].includes(c.activation) ? ` (k ${c.k})` : ''} · ${c.dSae} latents · ${c.sitesIn.map((s) => s.name).join(' + ')}${c.kind === 'transcoder' ? ` → ${c.sitesOut[0].name}` : ''} · model ${ov.meta.model_name || '?'}`,
    ),
    h(
      'div',
      { class: 'stats', id: 'overview-stats' },
      stat('held-out FVU', fmt(held.fvu, 4)),
      stat('L0', fmt(held.l0, 1)),
      stat('dead', `${ov.counts.dead} (${pct(ov.counts.dead / ov.counts.features)})`),
      stat('dense', `${ov.counts.dense}`),
      inm ? stat('CE loss recovered', pct(inm.ce_loss_recovered)) : stat('CE loss recovered', 'run sdl eval'),
      inm ? stat('KL (spliced)', fmt(inm.kl_spliced, 4)) : null,
      ov.absorption ? stat('mean absorption', fmt(ov.absorption.mean_absorption_fraction, 3)) : null,
      stat('tokens indexed', ov.counts.tokens.toLocaleString()),
    ),
    h(
      'div',
      { class: 'grid' },
      h('div', { class: 'card' }, lineChart('training loss', ov.curves.step, ov.curves.loss)),
      h('div', { class: 'card' }, lineChart('held-out FVU', ov.curves.step, ov.curves.fvu)),
      h('div', { class: 'card' }, lineChart('L0 (active latents per token)', ov.curves.step, ov.curves.l0, { zero: true })),
      h('div', { class: 'card' }, lineChart('dead fraction', ov.curves.step, ov.curves.dead, { zero: true })),
      h('div', { class: 'card' }, barChart(`log10 firing frequency (${dead} never fired)`, bins, binLabels, { color: '#d9480f' })),
      h(
        'div',
        { class: 'card' },
        barChart(
          'L0 per token (indexed tokens)',
          l0,
          l0.map((_, i) => String(i)),
        ),
      ),
      h(
        'div',
        { class: 'card wide' },
        h('h2', {}, 'configuration'),
        h(
          'table',
          {},
          h(
            'tbody',
            {},
            Object.entries({ ...c, ...(tr.lr ? { lr: tr.lr, steps: tr.steps, batch_tokens: tr.batch_tokens, backend: tr.backend } : {}) }).map(([k, v]) =>
              h('tr', {}, h('td', {}, k), h('td', {}, typeof v === 'object' ? JSON.stringify(v) : String(v))),
            ),
          ),
        ),
      ),
      inm
        ? h(
            'div',
            { class: 'card wide' },
            h('h2', {}, 'in the model (sdl eval)'),
            h(
              'div',
              {},
              Object.entries(inm).map(([k, v]) => h('span', { class: 'tok' }, `${k} ${fmt(v, 4)}`)),
            ),
          )
        : null,
    ),
    h('p', {}, h('a', { href: `#/${key}/features` }, `Browse all ${ov.counts.features.toLocaleString()} features →`)),
  );
  app().replaceChildren(page);
}

const SORTS = { id: (r) => r[0], freq: (r) => r[1], max: (r) => r[2], mean: (r) => r[3], absorption: (r) => r[6] ?? -1 };

async function featuresPage(key, query) {
  const [ov, list] = await Promise.all([SDL.get(`${key}/overview`), SDL.get(`${key}/list`)]);
  state.vocab[key] = ov.vocab;
  nav('features', key);
  const q = {
    text: query.get('q') || '',
    dead: query.get('dead') === '1',
    dense: query.get('dense') === '1',
    absorbed: query.get('absorbed') === '1',
    sort: query.get('sort') || 'id',
    desc: query.get('desc') === '1',
  };
  const tokStrings = list.rows.map((r) =>
    r[7]
      .map((t) => tokText(key, t))
      .join('\u0000')
      .toLowerCase(),
  );
  let shown = [];
  const ROW = 28;
  const count = h('span', { class: 'muted', id: 'shown-count' });
  const viewport = h('div', { class: 'vlist', id: 'feature-list' });
  const head = h(
    'div',
    { class: 'vhead' },
    ['id', 'freq', 'max', 'mean', 'flags', 'top tokens'].map((c) =>
      h(
        'span',
        {
          class: q.sort === c ? 'sorted' : undefined,
          'data-col': c,
          onclick: () => {
            if (!SORTS[c]) return;
            q.desc = q.sort === c ? !q.desc : c !== 'id';
            q.sort = c;
            update();
          },
        },
        c + (q.sort === c ? (q.desc ? ' ↓' : ' ↑') : ''),
      ),
    ),
  );
  const spacer = h('div', { style: 'position: relative' });
  viewport.append(head, spacer);
  const render = () => {
    const top = Math.max(0, Math.floor(viewport.scrollTop / ROW) - 5);
    const n = Math.ceil(viewport.clientHeight / ROW) + 10;
    spacer.replaceChildren(
      ...shown.slice(top, top + n).map((i, j) => {
        const r = list.rows[i];
        return h(
          'div',
          { class: 'vrow', 'data-id': r[0], style: `position: absolute; top: ${(top + j) * ROW}px; left: 0; right: 0` },
          h('a', { href: `#/${key}/f/${r[0]}` }, String(r[0])),
          h('span', { class: 'num' }, fmt(r[1], 5)),
          h('span', { class: 'num' }, fmt(r[2], 2)),
          h('span', { class: 'num' }, fmt(r[3], 2)),
          h(
            'span',
            {},
            r[4] ? h('span', { class: 'flag dead' }, 'dead') : null,
            r[5] ? h('span', { class: 'flag dense' }, 'dense') : null,
            r[6] > 0 ? h('span', { class: 'flag abs' }, 'absorbed') : null,
          ),
          h(
            'span',
            {},
            r[7].map((t) => h('span', { class: 'tok' }, tokText(key, t))),
          ),
        );
      }),
    );
  };
  const update = () => {
    const text = q.text.toLowerCase();
    shown = [];
    for (let i = 0; i < list.rows.length; i++) {
      const r = list.rows[i];
      if (q.dead && !r[4]) continue;
      if (q.dense && !r[5]) continue;
      if (q.absorbed && !(r[6] > 0)) continue;
      if (text && !tokStrings[i].includes(text)) continue;
      shown.push(i);
    }
    const key_ = SORTS[q.sort] || SORTS.id;
    shown.sort((a, b) => (key_(list.rows[a]) - key_(list.rows[b])) * (q.desc ? -1 : 1) || a - b);
    spacer.style.height = `${shown.length * ROW}px`;
    count.textContent = `${shown.length.toLocaleString()} of ${list.rows.length.toLocaleString()} features`;
    count.setAttribute('data-shown', shown.length);
    count.setAttribute('data-total', list.rows.length);
    head.querySelectorAll('span').forEach((s) => {
      const c = s.getAttribute('data-col');
      s.className = q.sort === c ? 'sorted' : '';
      s.textContent = c + (q.sort === c ? (q.desc ? ' ↓' : ' ↑') : '');
    });
    viewport.scrollTop = 0;
    render();
  };
  viewport.addEventListener('scroll', render);
  const check = (name, label) =>
    h(
      'label',
      {},
      h('input', {
        type: 'checkbox',
        id: `filter-${name}`,
        checked: q[name],
        onchange: (e) => {
          q[name] = e.target.checked;
          update();
        },
      }),
      ` ${label}`,
    );
  const page = h(
    'div',
    {},
    h('h1', {}, `${ov.name}: features`),
    h(
      'div',
      { class: 'controls' },
      h('input', {
        type: 'search',
        id: 'filter-text',
        placeholder: 'search top tokens…',
        value: q.text,
        oninput: (e) => {
          q.text = e.target.value;
          update();
        },
      }),
      check('dead', 'dead'),
      check('dense', 'dense'),
      check('absorbed', 'absorbed'),
      h(
        'label',
        {},
        'sort ',
        h(
          'select',
          {
            id: 'sort',
            onchange: (e) => {
              q.sort = e.target.value;
              q.desc = q.sort !== 'id';
              update();
            },
          },
          Object.keys(SORTS).map((s) => h('option', { value: s, selected: s === q.sort }, s)),
        ),
      ),
      count,
    ),
    viewport,
  );
  app().replaceChildren(page);
  update();
}

async function featurePage(key, id) {
  const ov = await SDL.get(`${key}/overview`);
  state.vocab[key] = ov.vocab;
  nav('features', key);
  const n = ov.counts.features;
  if (!/^\d+$/.test(id) || +id >= n) {
    app().replaceChildren(
      h(
        'div',
        { id: 'not-found' },
        h('h1', {}, 'Feature not found'),
        h('p', {}, `${ov.name} has features 0–${n - 1}; there is no feature ${id}.`),
        h('a', { href: `#/${key}/features` }, 'All features'),
      ),
    );
    return;
  }
  const i = +id;
  const chunk = await SDL.get(`${key}/chunk-${Math.floor(i / ov.chunk)}`);
  const f = chunk[i];
  const edges = ov.histogramEdges;
  const histLabels = f.histogram.map((_, b) => (b === 0 ? `< ${edges[0]}` : b >= edges.length ? `≥ ${fmt(edges[edges.length - 1], 0)}` : fmt(edges[b - 1], 3)));
  const lensList = (rows, cls) =>
    h(
      'div',
      {},
      rows.map(([t, e]) =>
        h(
          'div',
          { class: 'lens-row' },
          h('span', { class: 'tok', 'data-token': t }, tokText(key, t)),
          h('span', { class: cls }, `${e >= 0 ? '+' : ''}${e.toFixed(3)}`),
        ),
      ),
    );
  const bands = ov.quantileEdges;
  const byBand = new Map();
  for (const e of f.quantiles) {
    if (!byBand.has(e.band)) byBand.set(e.band, []);
    byBand.get(e.band).push(e);
  }
  const flags = [
    f.dead ? h('span', { class: 'flag dead' }, 'dead') : null,
    f.dense ? h('span', { class: 'flag dense' }, 'dense') : null,
    f.absorption > 0 ? h('span', { class: 'flag abs' }, `absorption ${fmt(f.absorption, 3)}`) : null,
  ];
  const page = h(
    'div',
    { id: 'feature-page', 'data-feature': i },
    h(
      'div',
      { class: 'links' },
      i > 0 ? h('a', { href: `#/${key}/f/${i - 1}` }, `← ${i - 1}`) : null,
      h('a', { href: `#/${key}/features` }, 'all features'),
      i + 1 < n ? h('a', { href: `#/${key}/f/${i + 1}` }, `${i + 1} →`) : null,
    ),
    h('h1', {}, `Feature ${i} `, flags),
    h(
      'div',
      { class: 'stats' },
      h('div', { class: 'stat' }, h('b', {}, f.count.toLocaleString()), h('span', {}, 'firings')),
      h('div', { class: 'stat' }, h('b', {}, fmt(f.freq, 5)), h('span', {}, 'frequency')),
      h('div', { class: 'stat' }, h('b', { id: 'max-act' }, fmt(f.max, 3)), h('span', {}, 'max activation')),
      h('div', { class: 'stat' }, h('b', {}, fmt(f.mean, 3)), h('span', {}, 'mean when firing')),
      h('div', { class: 'stat' }, h('b', {}, fmt(f.decoderNorm, 3)), h('span', {}, 'decoder norm')),
      f.encDecCos !== null ? h('div', { class: 'stat' }, h('b', {}, fmt(f.encDecCos, 3)), h('span', {}, 'encoder/decoder cos')) : null,
    ),
    h(
      'div',
      { class: 'grid' },
      h('div', { class: 'card' }, barChart('activation histogram (log-spaced bins)', f.histogram, histLabels, { color: '#d9480f' })),
      h(
        'div',
        { class: 'card', id: 'logit-lens' },
        h('h2', {}, 'logit lens'),
        f.logitLens
          ? h(
              'div',
              { class: 'lens' },
              h('div', { id: 'lens-pos' }, h('div', { class: 'muted' }, 'raises'), lensList(f.logitLens.pos, 'pos')),
              h('div', { id: 'lens-neg' }, h('div', { class: 'muted' }, 'lowers'), lensList(f.logitLens.neg, 'neg')),
            )
          : h('p', { class: 'muted' }, 'no unembedding found for this model'),
      ),
      h(
        'div',
        { class: 'card' },
        h('h2', {}, 'top tokens'),
        f.topTokens.map((t) => h('div', {}, h('span', { class: 'tok' }, tokText(key, t.token)), ` ×${t.count}, mean ${fmt(t.mean, 2)}`)),
        h('h2', { style: 'margin-top: 12px' }, 'nearest by decoder cosine'),
        h(
          'div',
          { class: 'links' },
          f.neighbors.map((x) => h('a', { href: `#/${key}/f/${x.other}` }, `${x.other} (${x.cosine.toFixed(2)})`)),
        ),
        h('h2', { style: 'margin-top: 12px' }, 'fires together with'),
        h(
          'div',
          { class: 'links' },
          f.cooccurrence.map((x) => h('a', { href: `#/${key}/f/${x.other}` }, `${x.other} (J ${x.jaccard.toFixed(2)})`)),
        ),
        f.siteNorms.length > 1
          ? [
              // CLTs: how strongly the feature writes each later layer (zero before its own layer).
              h('h2', { style: 'margin-top: 12px' }, 'decoder norm per target site'),
              f.siteNorms.map((s) =>
                h(
                  'div',
                  { class: 'site-norm' },
                  h('span', { style: 'display:inline-block;width:14em' }, s.site),
                  h('span', {
                    style: `display:inline-block;height:0.8em;background:#4c78a8;width:${(8 * s.norm) / Math.max(1e-12, ...f.siteNorms.map((t) => t.norm))}em`,
                  }),
                  ` ${fmt(s.norm, 3)}`,
                ),
              ),
            ]
          : null,
      ),
      h(
        'div',
        { class: 'card wide', id: 'top-examples' },
        h('h2', {}, 'top activating examples'),
        f.examples.length
          ? f.examples.map((e) => h('div', { class: 'ex' }, h('span', { class: 'v' }, fmt(e.act, 3)), context(key, e.tokens, e.acts, e.at, f.max)))
          : h('p', { class: 'muted' }, 'never fired on the indexed tokens'),
      ),
      h(
        'div',
        { class: 'card wide', id: 'quantile-examples' },
        h('h2', {}, 'examples across the activation range'),
        [...byBand.keys()]
          .sort((a, b) => b - a)
          .map((b) =>
            h(
              'div',
              {},
              h('div', { class: 'muted' }, `activation in [${bands[b] ?? 0}, ${bands[b + 1] ?? '∞'})`),
              byBand.get(b).map((e) => h('div', { class: 'ex' }, h('span', { class: 'v' }, fmt(e.act, 3)), context(key, e.tokens, e.acts, e.at, f.max))),
            ),
          ),
      ),
      state.live ? livePanels(key, i, f) : null,
    ),
  );
  app().replaceChildren(page);
  window.scrollTo(0, 0);
}

function livePanels(key, i, f) {
  const out = h('div', { id: 'live-text-out' });
  const text = h('textarea', { id: 'live-text', rows: 3 }, 'The whale swam under the ship, and the captain said that they have been at sea.');
  const run = async () => {
    out.replaceChildren(h('span', { class: 'muted' }, 'running…'));
    const r = await post('run', { dict: key, text: text.value, feature: i });
    if (r.error) return out.replaceChildren(h('span', { class: 'err' }, r.error));
    const max = Math.max(f.max, ...r.map((t) => t.features[0].act));
    out.replaceChildren(
      context(
        key,
        r.map((t) => t.id),
        r.map((t) => t.features[0].act),
        -1,
        max,
      ),
    );
  };
  const scale = h('input', { type: 'range', id: 'steer-scale', min: -20, max: 20, step: 0.5, value: 8 });
  const scaleLabel = h('span', {}, '8');
  scale.addEventListener('input', () => {
    scaleLabel.textContent = scale.value;
  });
  const mode = h('select', { id: 'steer-mode' }, h('option', { value: 'add' }, 'add'), h('option', { value: 'clamp' }, 'clamp'));
  const prompt = h('input', { type: 'text', id: 'steer-prompt', value: 'The people of the United States' });
  const clean = h('pre', { id: 'steer-clean' }),
    steered = h('pre', { id: 'steer-out' });
  const go = async () => {
    steered.textContent = 'generating…';
    const r = await post('steer', { dict: key, feature: i, scale: Number(scale.value), mode: mode.value, prompt: prompt.value, tokens: 30 });
    if (r.error) {
      steered.textContent = r.error;
      return;
    }
    clean.textContent = r.prompt + r.unsteered;
    steered.textContent = r.prompt + r.steered;
  };
  return [
    h(
      'div',
      { class: 'card wide live' },
      h('h2', {}, 'test this text'),
      text,
      h('p', {}, h('button', { class: 'primary', id: 'live-run', onclick: run }, 'Run')),
      out,
    ),
    h(
      'div',
      { class: 'card wide live' },
      h('h2', {}, 'steer'),
      h('div', { class: 'controls' }, 'scale ', scale, scaleLabel, mode),
      prompt,
      h('p', {}, h('button', { class: 'primary', id: 'steer-run', onclick: go }, 'Generate')),
      h(
        'div',
        { class: 'pair' },
        h('div', {}, h('div', { class: 'muted' }, 'unsteered'), clean),
        h('div', {}, h('div', { class: 'muted' }, 'steered'), steered),
      ),
    ),
  ];
}

async function post(what, body) {
  try {
    const r = await fetch(`api/${what}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return await r.json();
  } catch (e) {
    return { error: String(e) };
  }
}

function comparePage() {
  nav('compare');
  const cols = [
    ['name', (d) => h('a', { href: `#/${d.key}` }, d.name)],
    ['kind', (d) => d.kind],
    ['activation', (d) => d.activation],
    ['site', (d) => d.site],
    ['latents', (d) => d.latents],
    ['L0', (d) => fmt(d.l0, 1)],
    ['FVU', (d) => fmt(d.fvu, 4)],
    ['EV', (d) => fmt(d.explainedVariance, 4)],
    ['cosine', (d) => fmt(d.cossim, 4)],
    ['RRB', (d) => fmt(d.rrb, 3)],
    ['dead', (d) => pct(d.dead)],
    ['dense', (d) => pct(d.dense)],
    ['CE recovered', (d) => pct(d.ceRecovered)],
    ['KL', (d) => fmt(d.kl, 4)],
    ['absorption', (d) => fmt(d.absorption, 3)],
  ];
  const W = 420,
    H = 220,
    L = 46,
    B = 28;
  const pts = state.dicts.filter((d) => d.l0 !== null && d.fvu !== null);
  let body = '';
  if (pts.length) {
    const x1 = Math.max(...pts.map((d) => d.l0)) * 1.1 || 1,
      y1 = Math.max(...pts.map((d) => d.fvu)) * 1.1 || 1;
    body += `<line x1="${L}" y1="${H - B}" x2="${W}" y2="${H - B}" stroke="#ccc"/><line x1="${L}" y1="6" x2="${L}" y2="${H - B}" stroke="#ccc"/>`;
    body += `<text x="${W - 4}" y="${H - 6}" text-anchor="end">L0 (0 – ${fmt(x1, 1)})</text><text x="${L - 4}" y="12" text-anchor="end">${fmt(y1, 2)}</text><text x="${L - 4}" y="${H - B}" text-anchor="end">0</text><text x="6" y="${H / 2}">FVU</text>`;
    for (const d of pts) {
      const x = L + (d.l0 / x1) * (W - L - 8),
        y = H - B - (d.fvu / y1) * (H - B - 10);
      body += `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="4" fill="#d9480f"/><text x="${(x + 6).toFixed(1)}" y="${(y + 3).toFixed(1)}">${esc(d.name)}</text>`;
    }
  }
  app().replaceChildren(
    h(
      'div',
      {},
      h('h1', {}, 'Compare dictionaries'),
      h(
        'div',
        { class: 'card' },
        h(
          'table',
          { id: 'compare-table' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              cols.map(([c]) => h('th', {}, c)),
            ),
          ),
          h(
            'tbody',
            {},
            state.dicts.map((d) =>
              h(
                'tr',
                {},
                cols.map(([, f]) => h('td', {}, f(d))),
              ),
            ),
          ),
        ),
      ),
      h('div', { class: 'grid' }, h('div', { class: 'card' }, h('div', { class: 'chart-title' }, 'FVU against L0 (lower left is better)'), svg(W, H, body))),
    ),
  );
}

async function route() {
  const [path, qs] = (location.hash.slice(1) || '/').split('?');
  const parts = path.split('/').filter(Boolean);
  const query = new URLSearchParams(qs || '');
  try {
    if (!parts.length) return state.dicts.length > 1 ? comparePage() : overviewPage(state.dicts[0].key);
    if (parts[0] === 'compare') return comparePage();
    const key = parts[0];
    if (!state.dicts.some((d) => d.key === key)) throw new Error(`no dictionary ${key}`);
    if (parts[1] === 'features') return await featuresPage(key, query);
    if (parts[1] === 'f') return await featurePage(key, parts[2] || '');
    return await overviewPage(key);
  } catch (e) {
    app().replaceChildren(h('div', { id: 'not-found' }, h('h1', {}, 'Not found'), h('p', {}, String(e.message || e)), h('a', { href: '#/' }, 'Home')));
  }
}

(async () => {
  state.dicts = await SDL.get('dicts');
  if (location.protocol.startsWith('http')) {
    try {
      const r = await fetch('api/health');
      state.live = r.ok && (await r.json()).live === true;
    } catch {
      state.live = false;
    }
  }
  document.getElementById('live').hidden = !state.live;
  window.addEventListener('hashchange', route);
  await route();
  document.body.setAttribute('data-ready', '1');
})();
