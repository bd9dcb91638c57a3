// Which sites feed the encoder and which the decoder reconstructs: the only thing that distinguishes
// an SAE, a transcoder and a crosscoder (the paper's unified view).
import type { Manifest } from '../activations/manifest.js';
import { parseCanonical } from '../onnx/hooks.js';
import { UserError } from '../util/errors.js';
import type { Kind } from './config.js';

export interface SiteChoice {
  sitesIn: { name: string; width: number }[];
  sitesOut: { name: string; width: number }[];
}

export interface SiteRequest {
  kind: Kind;
  /** SAE: one site; crosscoder: several. */
  sites?: string[];
  layer?: number;
  /** CLT: its layers (default: every layer the harvest has both sites of). */
  layers?: number[];
  /** CLT: what each layer's features read (default mlp_in; resid_mid as circuit-tracer's CLTs). */
  input?: 'mlp_in' | 'resid_mid';
}

export function chooseSites(m: Manifest, req: SiteRequest): SiteChoice {
  const avail = m.sites.map((s) => ({ name: s.name, width: s.width }));
  const byName = new Map(avail.map((s) => [s.name, s]));
  const list = avail.map((s) => s.name).join(', ');
  const need = (name: string) => {
    const s = byName.get(name);
    if (!s) throw new UserError(`the harvest has no site ${name}; it has ${list}`);
    return s;
  };
  if (req.kind === 'clt') {
    const input = req.input ?? 'mlp_in';
    const has = (site: string) =>
      new Set(
        avail
          .map((s) => parseCanonical(s.name))
          .filter((c) => c && c.site === site)
          .map((c) => c!.layer),
      );
    const ins = has(input),
      outs = has('mlp_out');
    const layers = req.layers ?? [...ins].filter((l) => outs.has(l)).sort((a, b) => a - b);
    const missing = layers.filter((l) => !ins.has(l) || !outs.has(l));
    if (missing.length || layers.length < 1) {
      const both = [...ins].filter((l) => outs.has(l)).sort((a, b) => a - b);
      throw new UserError(
        `a CLT needs blocks.L.hook_${input} and blocks.L.hook_mlp_out for ${missing.length ? `layer${missing.length > 1 ? 's' : ''} ${missing.join(', ')}` : 'its layers'}; the harvest has both for ${both.length ? `layers ${both.join(', ')}` : 'no layer'}; harvest with --layers all --sites ${input},mlp_out`,
      );
    }
    if (new Set(layers).size !== layers.length || layers.some((l, i) => i > 0 && l <= layers[i - 1]))
      throw new UserError(`--layers for a CLT must be increasing and distinct (got ${layers.join(',')})`);
    return { sitesIn: layers.map((l) => need(`blocks.${l}.hook_${input}`)), sitesOut: layers.map((l) => need(`blocks.${l}.hook_mlp_out`)) };
  }
  if (req.kind === 'transcoder') {
    const layers = [
      ...new Set(
        avail
          .map((s) => parseCanonical(s.name))
          .filter((c) => c && c.site === 'mlp_in')
          .map((c) => c!.layer),
      ),
    ];
    const layer = req.layer ?? layers[0];
    const inName = `blocks.${layer}.hook_mlp_in`,
      outName = `blocks.${layer}.hook_mlp_out`;
    if (layer === undefined || !byName.has(inName) || !byName.has(outName)) {
      throw new UserError(
        `a transcoder needs ${layer === undefined ? 'blocks.L.hook_mlp_in and blocks.L.hook_mlp_out' : `${inName} and ${outName}`} in the harvest, which has ${list}; harvest with --sites mlp_in,mlp_out`,
      );
    }
    return { sitesIn: [need(inName)], sitesOut: [need(outName)] };
  }
  if (req.kind === 'sae') {
    if (req.sites && req.sites.length > 1) throw new UserError('an SAE reads one site; pass one --site, or use --kind crosscoder for several');
    const name =
      req.sites?.[0] ??
      (req.layer !== undefined ? `blocks.${req.layer}.hook_resid_post` : (avail.find((s) => /hook_resid_post$/.test(s.name))?.name ?? avail[0]?.name));
    const s = need(name);
    return { sitesIn: [s], sitesOut: [s] };
  }
  const names = req.sites ?? avail.filter((s) => /hook_resid_post$/.test(s.name)).map((s) => s.name);
  if (names.length < 2) throw new UserError(`a crosscoder needs two or more sites (--sites a,b); the harvest has ${list}`);
  const sites = names.map(need);
  return { sitesIn: sites, sitesOut: sites };
}
