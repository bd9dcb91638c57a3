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
