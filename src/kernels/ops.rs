//! Elementwise and row-wise float ops of a transformer step.

/// `out = x / rms(x) * weight`, row by row. The sum of squares is taken in
/// f64 as ggml does: hidden states of small models have large outliers.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let scale = rms_scale(xr, eps);
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// `x = x / rms(x) * weight` for one row (a head's queries or keys), as
/// `rms_norm` computes it.
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

/// `x = (x - mean) / sqrt(var + eps) * weight + bias` for one row, as
/// ggml's norm, mul and add compute it: the mean and the variance summed
/// in f64 (in four running sums, where ggml keeps one: a row's f64 sums
/// in order were the encoder's longest chain of dependent additions, and
/// their order shows only past f32's precision).
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = x.len() as f64;
    let mean = (sum_f64(x, |v| v as f64) / n) as f32;
    x.iter_mut().for_each(|v| *v -= mean);
    let sum2 = sum_f64(x, |v| (v * v) as f64);
    let scale = 1.0 / ((sum2 / n) as f32 + eps).sqrt();
    for ((v, &w), &b) in x.iter_mut().zip(weight).zip(bias) {
        *v = *v * scale * w + b;
    }
}

/// The sum of `x`'s values, each made f64 by `f`, in four running sums
/// (value i in sum i % 4).
fn sum_f64(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut sums = [0f64; 4];
    let chunks = x.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        for (s, &v) in sums.iter_mut().zip(c) {
            *s += f(v);
        }
    }
    for (s, &v) in sums.iter_mut().zip(tail) {
        *s += f(v);
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3])
}

/// 1 / rms(x), the mean of squares summed in f64.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let ss = (x.iter().map(|&v| (v * v) as f64).sum::<f64>() / x.len() as f64) as f32;
    1.0 / (ss + eps).sqrt()
}

/// Which elements of a head RoPE rotates together, as ggml names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama's GGUFs are converted for it.
    Normal,
    /// Pairs half the rotary dimensions apart (x[i], x[i + d/2]): GPT-NeoX's,
    /// which Qwen, Gemma and Phi-3 keep.
    Neox,
}

/// Rotary position embedding.
pub struct Rope {
    half_dims: usize,
    theta_scale: f32,
    style: RopeStyle,
    /// Each pair's angle divided by its factor (Llama 3's `rope_freqs`).
    freq_factors: Option<Vec<f32>>,
    /// Every angle times this (linear scaling: 1 / the scaling factor).
    freq_scale: f32,
    /// cos and sin times this (ggml's `attn_factor`: Phi-3's long-context
    /// scaling).
    attn_factor: f32,
}

impl Rope {
    pub fn new(rot_dims: usize, base: f32, style: RopeStyle) -> Rope {
        Rope {
            half_dims: rot_dims / 2,
            theta_scale: base.powf(-2.0 / rot_dims as f32),
            style,
            freq_factors: None,
            freq_scale: 1.0,
            attn_factor: 1.0,
        }
    }

    /// The same with cos and sin times `attn_factor`.
    pub fn with_attn_factor(self, attn_factor: f32) -> Rope {
        Rope { attn_factor, ..self }
    }

    /// The same with pair i's angle `freq_scale * theta_i / freq_factors[i]`,
    /// in ggml's order of operations.
    pub fn scaled(rot_dims: usize, base: f32, style: RopeStyle, freq_factors: Option<Vec<f32>>, freq_scale: f32) -> Rope {
        assert!(freq_factors.as_ref().is_none_or(|f| f.len() == rot_dims / 2), "one frequency factor per pair");
        Rope { freq_factors, freq_scale, ..Rope::new(rot_dims, base, style) }
    }

    /// Rotates the pairs of every head in `x` at position `pos` (the first
    /// rotary dimensions of each head; the rest stay). The angle is built
    /// by repeated multiplication and the rotation uses one fused
    /// multiply-add per output, exactly as llama.cpp's compiled code does:
    /// with these, greedy outputs match its bit for bit.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has FMA, checked just above.
            return unsafe { self.apply_fma(x, head_dim, pos) };
        }
        self.apply_body(x, head_dim, pos)
    }

    /// # Safety
    /// The CPU has FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    unsafe fn apply_fma(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        self.apply_body(x, head_dim, pos)
    }

    #[inline(always)]
    fn apply_body(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        let mut cos_sin = [(0f32, 0f32); 256];
        let mut theta = pos as f32;
        for (i, cs) in cos_sin.iter_mut().take(self.half_dims).enumerate() {
            let factor = self.freq_factors.as_ref().map_or(1.0, |f| f[i]);
            let angle = self.freq_scale * (theta / factor);
            *cs = (angle.cos() * self.attn_factor, angle.sin() * self.attn_factor);
            theta *= self.theta_scale;
        }
        let (step, apart) = match self.style {
            RopeStyle::Normal => (2, 1),
            RopeStyle::Neox => (1, self.half_dims),
        };
        for head in x.chunks_exact_mut(head_dim) {
            for (i, &(cos, sin)) in cos_sin.iter().take(self.half_dims).enumerate() {
                let (j, k) = (step * i, step * i + apart);
                let (a, b) = (head[j], head[k]);
                head[j] = a.mul_add(cos, -(b * sin));
                head[k] = a.mul_add(sin, b * cos);
            }
        }
    }
}

pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}
