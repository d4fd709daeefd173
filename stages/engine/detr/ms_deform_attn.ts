/**
 * Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021, eq. 3; fundamentalvision/
 * Deformable-DETR@11169a6, models/ops/functions/ms_deform_attn_func.py `ms_deform_attn_core_pytorch` and
 * models/ops/modules/ms_deform_attn.py `MSDeformAttn`), on the engine's bilinear grid sampling
 * (`gridSampleBilinear` = `F.grid_sample(bilinear, zeros, align_corners=False)`, what the official PyTorch path
 * calls; the CUDA kernel computes the same sum).
 *
 *   MSDeformAttn(z_q, p̂_q, {x^l}) = Σ_m W_m [ Σ_l Σ_k A_mlqk · W'_m x^l(φ_l(p̂_q) + Δp_mlqk) ]
 *
 * Shape legend: N batch, Lq queries, S = Σ_l H_l·W_l flattened multi-level tokens, M heads, Dh = D / M per head,
 * L levels, P points per head and level. Sampling locations are (x, y) in [0, 1] of each level's map (0 = left /
 * top edge, 1 = right / bottom edge, as align_corners=False reads them).
 */
import * as tf from '@tensorflow/tfjs';
import { Linear } from '../layers.js';
import { gridSampleBilinear } from '../ops/grid_sample.js';
import { Initializer, type ParamScope } from '../params.js';

/** (H_l, W_l) of every level, in the order the tokens are flattened. */
export type SpatialShapes = ReadonlyArray<readonly [number, number]>;

/**
 * `ms_deform_attn_core_pytorch`: value [N, S, M, Dh], samplingLocations [N, Lq, M, L, P, 2] (x, y in [0, 1]),
 * attentionWeights [N, Lq, M, L, P] → [N, Lq, M·Dh]. Differentiable in all three tensors.
 */
export function msDeformAttnCore(value: tf.Tensor4D, spatialShapes: SpatialShapes, samplingLocations: tf.Tensor, attentionWeights: tf.Tensor): tf.Tensor3D {
  const [n, s, m, dh] = value.shape;
  const levels = spatialShapes.length;
  const total = spatialShapes.reduce((acc, [h, w]) => acc + h * w, 0);
  if (total !== s) throw new Error(`msDeformAttnCore: spatial shapes cover ${total} tokens, value has ${s}`);
  const [ln, lq, lm, ll, p, two] = samplingLocations.shape;
  if (samplingLocations.rank !== 6 || ln !== n || lm !== m || ll !== levels || two !== 2) {
    throw new Error(`msDeformAttnCore: samplingLocations must be [${n}, Lq, ${m}, ${levels}, P, 2], got [${samplingLocations.shape}]`);
  }
  const aw = attentionWeights.shape;
  if (attentionWeights.rank !== 5 || aw[0] !== n || aw[1] !== lq || aw[2] !== m || aw[3] !== levels || aw[4] !== p) {
    throw new Error(`msDeformAttnCore: attentionWeights must be [${n}, ${lq}, ${m}, ${levels}, ${p}], got [${aw}]`);
  }
  return tf.tidy(() => {
    const perLevel = tf.split(value, spatialShapes.map(([h, w]) => h * w), 1);
    const grids = tf.sub(tf.mul(samplingLocations, 2), 1); // [0, 1] → [−1, 1]
    const sampled = spatialShapes.map(([h, w], l) => {
      // [N, H·W, M, Dh] → [N·M, H, W, Dh] (NHWC: one map per batch element and head)
      const map = tf.reshape(tf.transpose(perLevel[l]!, [0, 2, 1, 3]), [n * m, h!, w!, dh]) as tf.Tensor4D;
      // [N, Lq, M, P, 2] → [N·M, Lq, P, 2]
      const grid = tf.reshape(tf.transpose(tf.squeeze(tf.slice(grids, [0, 0, 0, l, 0, 0], [n, lq!, m, 1, p!, 2]), [3]), [0, 2, 1, 3, 4]), [n * m, lq!, p!, 2]) as tf.Tensor4D;
      return gridSampleBilinear(map, grid); // [N·M, Lq, P, Dh]
    });
    const stacked = tf.reshape(tf.stack(sampled, 2), [n * m, lq!, levels * p!, dh]); // [N·M, Lq, L·P, Dh]
    const weights = tf.reshape(tf.transpose(attentionWeights, [0, 2, 1, 3, 4]), [n * m, lq!, levels * p!, 1]);
    const out = tf.sum(tf.mul(stacked, weights), 2); // [N·M, Lq, Dh]
    return tf.reshape(tf.transpose(tf.reshape(out, [n, m, lq!, dh]), [0, 2, 1, 3]), [n, lq!, m * dh]) as tf.Tensor3D;
  });
}

export interface MSDeformAttnConfig {
  /** d_model (256). */
  dModel: number;
  /** n_levels (4). */
  nLevels: number;
  /** n_heads (8). */
  nHeads: number;
  /** n_points (4). */
  nPoints: number;
}

/**
 * `MSDeformAttn` with its state_dict names (`sampling_offsets`, `attention_weights`, `value_proj`, `output_proj`)
 * and initialisation: zero offset weights with the bias set to M directions (cos θ_m, sin θ_m)/max(|cos|, |sin|)
 * scaled by the point index 1..P, zero attention weights and bias (uniform attention), xavier_uniform value and
 * output projections with zero bias.
 */
export class MSDeformAttn {
  readonly samplingOffsets: Linear;
  readonly attentionWeights: Linear;
  readonly valueProj: Linear;
  readonly outputProj: Linear;

  constructor(
    scope: ParamScope,
    readonly config: MSDeformAttnConfig,
    seed: number | string = 0,
  ) {
    const { dModel: d, nLevels: l, nHeads: m, nPoints: p } = config;
    if (d % m !== 0) throw new Error(`MSDeformAttn: d_model must be divisible by n_heads, but got ${d} and ${m}`);
    const init = new Initializer(`ms-deform-attn:${scope.prefix}:${seed}`);
    this.samplingOffsets = new Linear(scope.child('sampling_offsets'), init, d, m * l * p * 2);
    this.attentionWeights = new Linear(scope.child('attention_weights'), init, d, m * l * p);
    this.valueProj = new Linear(scope.child('value_proj'), init, d, d, { init: 'xavier_uniform' });
    this.outputProj = new Linear(scope.child('output_proj'), init, d, d, { init: 'xavier_uniform' });
    const gridInit = new Float32Array(m * l * p * 2);
    for (let h = 0; h < m; h++) {
      const theta = Math.fround(h * Math.fround((2 * Math.PI) / m));
      const [cx, cy] = [Math.fround(Math.cos(theta)), Math.fround(Math.sin(theta))];
      const norm = Math.max(Math.abs(cx), Math.abs(cy));
      for (let lv = 0; lv < l; lv++) {
        for (let i = 0; i < p; i++) {
          const at = ((h * l + lv) * p + i) * 2;
          gridInit[at] = Math.fround(cx / norm) * (i + 1);
          gridInit[at + 1] = Math.fround(cy / norm) * (i + 1);
        }
      }
    }
    tf.tidy(() => {
      this.samplingOffsets.weight.assign(tf.zerosLike(this.samplingOffsets.weight));
      this.samplingOffsets.bias!.assign(tf.tensor1d(gridInit));
      this.attentionWeights.weight.assign(tf.zerosLike(this.attentionWeights.weight));
      this.attentionWeights.bias!.assign(tf.zerosLike(this.attentionWeights.bias!));
    });
  }

  /**
   * query [N, Lq, D]; referencePoints [N, Lq, L, 2] (x, y in [0, 1], padding included) or [N, Lq, L, 4] (reference
   * boxes cx, cy, w, h); inputFlatten [N, S, D]; inputPaddingMask [N, S] bool (true = padding) → [N, Lq, D].
   */
  apply(query: tf.Tensor3D, referencePoints: tf.Tensor4D, inputFlatten: tf.Tensor3D, spatialShapes: SpatialShapes, inputPaddingMask?: tf.Tensor2D): tf.Tensor3D {
    const { dModel: d, nLevels: l, nHeads: m, nPoints: p } = this.config;
    const [n, lq] = query.shape;
    const s = inputFlatten.shape[1];
    if (spatialShapes.length !== l) throw new Error(`MSDeformAttn: built for ${l} levels, got ${spatialShapes.length} spatial shapes`);
    const [rn, rq, rl, rc] = referencePoints.shape;
    if (rn !== n || rq !== lq || rl !== l || (rc !== 2 && rc !== 4)) throw new Error(`Last dim of reference_points must be 2 or 4: expected [${n}, ${lq}, ${l}, 2|4], got [${referencePoints.shape}]`);
    return tf.tidy(() => {
      let value: tf.Tensor = this.valueProj.apply(inputFlatten);
      if (inputPaddingMask) {
        if (inputPaddingMask.dtype !== 'bool') throw new Error(`MSDeformAttn: inputPaddingMask must be bool, got ${inputPaddingMask.dtype}`);
        value = tf.where(tf.expandDims(inputPaddingMask, 2), tf.zerosLike(value), value); // masked_fill(·, 0)
      }
      const v = tf.reshape(value, [n, s, m, d / m]) as tf.Tensor4D;
      const offsets = tf.reshape(this.samplingOffsets.apply(query), [n, lq, m, l, p, 2]);
      const logits = tf.reshape(this.attentionWeights.apply(query), [n, lq, m, l * p]);
      const weights = tf.reshape(tf.softmax(logits, -1), [n, lq, m, l, p]);
      const ref = tf.reshape(referencePoints, [n, lq, 1, l, 1, rc]);
      let locations: tf.Tensor;
      if (rc === 2) {
        // Offsets are in pixels of each level: divide by (W_l, H_l).
        const normalizer = tf.tensor(spatialShapes.flatMap(([h, w]) => [w, h]), [1, 1, 1, l, 1, 2]);
        locations = tf.add(ref, tf.div(offsets, normalizer));
      } else {
        // Offsets are fractions of the reference box: Δ / P · (w, h) · 0.5.
        const xy = tf.slice(ref, [0, 0, 0, 0, 0, 0], [n, lq, 1, l, 1, 2]);
        const wh = tf.slice(ref, [0, 0, 0, 0, 0, 2], [n, lq, 1, l, 1, 2]);
        locations = tf.add(xy, tf.mul(tf.mul(tf.div(offsets, p), wh), 0.5));
      }
      // A location more than one pixel outside its map samples only zero padding (value and gradient 0), so clamping to
      // [−1, 2] changes nothing; it keeps a diverged run's huge offsets from overflowing the gather's int32 indices, and
      // NaN locations sample the padding too while the output is made NaN (as the official's would be), so the run's
      // divergence shows as non-finite outputs instead of an index error.
      const nan = tf.isNaN(locations);
      const safe = tf.where(nan, tf.fill(locations.shape, -1), tf.clipByValue(locations, -1, 2));
      const poison = tf.sum(tf.where(nan, tf.fill(locations.shape, Number.NaN), tf.zeros(locations.shape)));
      return tf.add(this.outputProj.apply(msDeformAttnCore(v, spatialShapes, safe, weights)), poison) as tf.Tensor3D;
    });
  }
}
