//! Hook points: typed names for the activations a forward pass exposes, and the
//! readers and writers a caller attaches to them.
//!
//! Names follow TransformerLens (`blocks.3.hook_resid_post`, `blocks.0.attn.hook_z`) so
//! that results line up with the Python interpretability literature, but they are a type:
//! a name is parsed once at the edge (CLI, YAML) and never munged as a string inside.
//!
//! Shapes, with `b` batch, `t` positions of this call, `d` d_model, `h` query heads,
//! `kvh` key/value heads, `dh` head dim, `m` MLP width:
//! - `hook_embed`, `hook_resid_*`, `hook_attn_out`, `hook_mlp_out`: `[b, t, d]`
//! - `attn.hook_q`, `attn.hook_z`: `[b, t, h, dh]`; `attn.hook_k`, `attn.hook_v`: `[b, t, kvh, dh]`
//! - `attn.hook_pattern`: `[b, h, t, t_total]` (softmaxed, over the cached keys too)
//! - `mlp.hook_pre`, `mlp.hook_post`: `[b, t, m]`

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::Tensor;

/// Where a hook attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    Embed,
    ResidPre(usize),
    ResidMid(usize),
    ResidPost(usize),
    AttnQ(usize),
    AttnK(usize),
    AttnV(usize),
    AttnZ(usize),
    AttnPattern(usize),
    AttnOut(usize),
    MlpPre(usize),
    MlpPost(usize),
    MlpOut(usize),
}

/// The axis a writer's `units` selector indexes, after the position axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitAxis {
    /// `[b, t, units]`: d_model dims or MLP neurons.
    Feature,
    /// `[b, t, heads, dh]`: whole heads.
    Head,
    /// `[b, heads, t, t_total]`: the attention pattern, selected by head.
    PatternHead,
}

impl HookPoint {
    pub fn layer(&self) -> Option<usize> {
        use HookPoint::*;
        match *self {
            Embed => None,
            ResidPre(l) | ResidMid(l) | ResidPost(l) | AttnQ(l) | AttnK(l) | AttnV(l)
            | AttnZ(l) | AttnPattern(l) | AttnOut(l) | MlpPre(l) | MlpPost(l) | MlpOut(l) => {
                Some(l)
            }
        }
    }

    /// The same hook point at layer `l` (the embedding has no layer and stays).
    pub fn with_layer(&self, l: usize) -> HookPoint {
        use HookPoint::*;
        match *self {
            Embed => Embed,
            ResidPre(_) => ResidPre(l),
            ResidMid(_) => ResidMid(l),
            ResidPost(_) => ResidPost(l),
            AttnQ(_) => AttnQ(l),
            AttnK(_) => AttnK(l),
            AttnV(_) => AttnV(l),
            AttnZ(_) => AttnZ(l),
            AttnPattern(_) => AttnPattern(l),
            AttnOut(_) => AttnOut(l),
            MlpPre(_) => MlpPre(l),
            MlpPost(_) => MlpPost(l),
            MlpOut(_) => MlpOut(l),
        }
    }

    pub fn unit_axis(&self) -> UnitAxis {
        use HookPoint::*;
        match self {
            AttnQ(_) | AttnK(_) | AttnV(_) | AttnZ(_) => UnitAxis::Head,
            AttnPattern(_) => UnitAxis::PatternHead,
            _ => UnitAxis::Feature,
        }
    }

    /// Every hook point of a model with `n_layers` blocks, in forward order.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        use HookPoint::*;
        let mut v = vec![Embed];
        for l in 0..n_layers {
            v.extend([
                ResidPre(l),
                AttnQ(l),
                AttnK(l),
                AttnV(l),
                AttnPattern(l),
                AttnZ(l),
                AttnOut(l),
                ResidMid(l),
                MlpPre(l),
                MlpPost(l),
                MlpOut(l),
                ResidPost(l),
            ]);
        }
        v
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HookPoint::*;
        match self {
            Embed => write!(f, "hook_embed"),
            ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            AttnQ(l) => write!(f, "blocks.{l}.attn.hook_q"),
            AttnK(l) => write!(f, "blocks.{l}.attn.hook_k"),
            AttnV(l) => write!(f, "blocks.{l}.attn.hook_v"),
            AttnZ(l) => write!(f, "blocks.{l}.attn.hook_z"),
            AttnPattern(l) => write!(f, "blocks.{l}.attn.hook_pattern"),
            AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            MlpPre(l) => write!(f, "blocks.{l}.mlp.hook_pre"),
            MlpPost(l) => write!(f, "blocks.{l}.mlp.hook_post"),
            MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hook point '{name}': expected hook_embed or blocks.<layer>.<hook_resid_pre|hook_resid_mid|hook_resid_post|attn.hook_q|attn.hook_k|attn.hook_v|attn.hook_z|attn.hook_pattern|hook_attn_out|mlp.hook_pre|mlp.hook_post|hook_mlp_out>")]
pub struct ParseHookError {
    pub name: String,
}

impl FromStr for HookPoint {
    type Err = ParseHookError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use HookPoint::*;
        let err = || ParseHookError {
            name: s.to_string(),
        };
        if s == "hook_embed" {
            return Ok(Embed);
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(err)?;
        let (layer, hook) = rest.split_once('.').ok_or_else(err)?;
        // Reject "+1", "01" and the like so that a name has one spelling.
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        if layer.len() > 1 && layer.starts_with('0') {
            return Err(err());
        }
        let l: usize = layer.parse().map_err(|_| err())?;
        let ctor: fn(usize) -> HookPoint = match hook {
            "hook_resid_pre" => ResidPre,
            "hook_resid_mid" => ResidMid,
            "hook_resid_post" => ResidPost,
            "attn.hook_q" => AttnQ,
            "attn.hook_k" => AttnK,
            "attn.hook_v" => AttnV,
            "attn.hook_z" => AttnZ,
            "attn.hook_pattern" => AttnPattern,
            "hook_attn_out" => AttnOut,
            "mlp.hook_pre" => MlpPre,
            "mlp.hook_post" => MlpPost,
            "hook_mlp_out" => MlpOut,
            _ => return Err(err()),
        };
        Ok(ctor(l))
    }
}

/// Which positions a writer touches. Positions are absolute (0 = first token of the
/// sequence), so a writer keeps its meaning during KV-cache generation, where each call
/// sees only the new positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Positions {
    All,
    Only(BTreeSet<usize>),
}

impl Positions {
    pub fn only(ps: impl IntoIterator<Item = usize>) -> Self {
        Positions::Only(ps.into_iter().collect())
    }
}

/// Which units (heads, or features/neurons) along the hook's unit axis a writer touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Units {
    All,
    Only(BTreeSet<usize>),
}

impl Units {
    pub fn only(us: impl IntoIterator<Item = usize>) -> Self {
        Units::Only(us.into_iter().collect())
    }
}

/// What a writer does to the activation, before the position/unit restriction is applied.
///
/// The edit receives the whole activation of this call and the absolute position of its
/// first token; the hook machinery then keeps the edited values only at the selected
/// positions and units. Edits hold plain tensors, so a `Var`'s tensor inside an edit is
/// differentiated through like any other op (the model's fused kernels step aside for
/// tracked tensors, see `ops.rs`).
pub trait Edit: Send + Sync {
    fn apply(&self, x: &Tensor, ctx: &EditCtx) -> candle_core::Result<Tensor>;
}

/// Where in the sequence the current forward call sits.
#[derive(Debug, Clone, Copy)]
pub struct EditCtx {
    pub point: HookPoint,
    /// Absolute position of the first token of this call (the KV-cache offset).
    pub offset: usize,
}

/// Replace the activation with a fixed tensor (broadcast to its shape).
pub struct Replace(pub Tensor);
/// Add a tensor (e.g. a steering vector `[d]`) to the activation.
pub struct AddTensor(pub Tensor);
/// Multiply the activation by a constant (0.0 is zero-ablation).
pub struct Scale(pub f64);
/// Remove the component along a direction `u` (`[d]`): `h ← h − (h·û)û`.
pub struct ProjectOut(pub Tensor);
/// Copy values from a cached activation of another run (`[b or 1, t_total, ...]`),
/// taking the positions this call covers. This is activation patching.
pub struct PatchFrom(pub Tensor);
/// The function inside a [`MapFn`].
pub type EditFn = dyn Fn(&Tensor, &EditCtx) -> candle_core::Result<Tensor> + Send + Sync;
/// Any function, for fitted interventions (low-rank breakers, learned edits).
pub struct MapFn(pub Arc<EditFn>);

impl Edit for Replace {
    fn apply(&self, x: &Tensor, _: &EditCtx) -> candle_core::Result<Tensor> {
        self.0
            .to_dtype(x.dtype())?
            .broadcast_as(x.shape())?
            .contiguous()
    }
}

impl Edit for AddTensor {
    fn apply(&self, x: &Tensor, _: &EditCtx) -> candle_core::Result<Tensor> {
        x.broadcast_add(&self.0.to_dtype(x.dtype())?)
    }
}

impl Edit for Scale {
    fn apply(&self, x: &Tensor, _: &EditCtx) -> candle_core::Result<Tensor> {
        x.affine(self.0, 0.0)
    }
}

impl Edit for ProjectOut {
    fn apply(&self, x: &Tensor, _: &EditCtx) -> candle_core::Result<Tensor> {
        let u = self.0.to_dtype(x.dtype())?;
        let norm = u.sqr()?.sum_all()?.sqrt()?;
        let u = u.broadcast_div(&norm)?;
        let d = u.dims1()?;
        // (h·û) as [.., 1], then subtract (h·û)û.
        let lead: Vec<usize> = x.dims()[..x.rank() - 1].to_vec();
        let flat = x.reshape(((), d))?;
        // Through `ops::linear`: a row's result must not depend on the rows beside it.
        let coef = super::ops::linear(&flat, &u.unsqueeze(0)?, None)?; // [n, 1]
        let proj = coef.broadcast_mul(&u.unsqueeze(0)?)?; // [n, d]
        let mut shape = lead;
        shape.push(d);
        (flat - proj)?.reshape(shape)
    }
}

impl Edit for PatchFrom {
    fn apply(&self, x: &Tensor, ctx: &EditCtx) -> candle_core::Result<Tensor> {
        let t = position_len(x, ctx.point)?;
        let pos_axis = position_axis(ctx.point);
        let src = self.0.narrow(pos_axis, ctx.offset, t)?;
        src.to_dtype(x.dtype())?
            .broadcast_as(x.shape())?
            .contiguous()
    }
}

impl Edit for MapFn {
    fn apply(&self, x: &Tensor, ctx: &EditCtx) -> candle_core::Result<Tensor> {
        (self.0)(x, ctx)
    }
}

/// One writer: an edit at a hook point, restricted to positions and units.
#[derive(Clone)]
pub struct Writer {
    pub point: HookPoint,
    pub positions: Positions,
    pub units: Units,
    pub edit: Arc<dyn Edit>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("point", &self.point)
            .field("positions", &self.positions)
            .field("units", &self.units)
            .finish()
    }
}

impl Writer {
    pub fn new(point: HookPoint, edit: impl Edit + 'static) -> Self {
        Writer {
            point,
            positions: Positions::All,
            units: Units::All,
            edit: Arc::new(edit),
        }
    }
    pub fn at_positions(mut self, p: Positions) -> Self {
        self.positions = p;
        self
    }
    pub fn at_units(mut self, u: Units) -> Self {
        self.units = u;
        self
    }
}

/// The hooks of one forward pass: which activations to cache, and which to edit.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    readers: BTreeSet<HookPoint>,
    writers: Vec<Writer>,
    /// Streams shared with other cases of a suite (not a hook: it changes no value).
    memo: Option<super::prefix_memo::PrefixMemo>,
}

impl Hooks {
    pub fn new() -> Self {
        Self::default()
    }
    /// Cache the activation at `p` (after any writers at `p` ran).
    pub fn read(mut self, p: HookPoint) -> Self {
        self.readers.insert(p);
        self
    }
    pub fn read_all(mut self, ps: impl IntoIterator<Item = HookPoint>) -> Self {
        self.readers.extend(ps);
        self
    }
    pub fn write(mut self, w: Writer) -> Self {
        self.push_writer(w);
        self
    }
    pub fn push_writer(&mut self, w: Writer) {
        self.writers.push(w);
    }
    pub fn is_empty(&self) -> bool {
        self.readers.is_empty() && self.writers.is_empty()
    }
    /// Share streams with other cases through `memo` (see [`super::prefix_memo`]).
    pub fn with_memo(mut self, memo: super::prefix_memo::PrefixMemo) -> Self {
        self.memo = Some(memo);
        self
    }
    pub(crate) fn memo(&self) -> Option<&super::prefix_memo::PrefixMemo> {
        self.memo.as_ref()
    }
    /// The first block any reader or writer sits in (0 for the embedding), or `None`
    /// without hooks: blocks before it run as in the unmodified model.
    pub fn first_block(&self) -> Option<usize> {
        self.readers
            .iter()
            .chain(self.writers.iter().map(|w| &w.point))
            .map(|p| p.layer().unwrap_or(0))
            .min()
    }
    pub fn writers(&self) -> &[Writer] {
        &self.writers
    }
    pub fn readers(&self) -> impl Iterator<Item = &HookPoint> {
        self.readers.iter()
    }
    /// Whether any reader or writer is at `p` (a model may then not skip forming it).
    pub fn touches(&self, p: HookPoint) -> bool {
        self.readers.contains(&p) || self.writers.iter().any(|w| w.point == p)
    }

    /// Check every hook against the model's shape, so a bad layer index is an error
    /// before any compute rather than a hook that silently never fires.
    pub fn validate(&self, n_layers: usize) -> Result<(), HookError> {
        let points = self
            .readers
            .iter()
            .copied()
            .chain(self.writers.iter().map(|w| w.point));
        for p in points {
            if let Some(l) = p.layer() {
                if l >= n_layers {
                    return Err(HookError::LayerOutOfRange { point: p, n_layers });
                }
            }
        }
        Ok(())
    }

    /// Run the writers registered at `p` over `x`, then cache it if a reader asked.
    pub(crate) fn apply(
        &self,
        p: HookPoint,
        x: Tensor,
        offset: usize,
        cache: &mut ActivationCache,
    ) -> candle_core::Result<Tensor> {
        let mut x = x;
        for w in self.writers.iter().filter(|w| w.point == p) {
            let ctx = EditCtx { point: p, offset };
            let edited = w.edit.apply(&x, &ctx)?;
            if edited.shape() != x.shape() {
                candle_core::bail!(
                    "writer at {p} returned shape {:?}, expected {:?}",
                    edited.shape(),
                    x.shape()
                );
            }
            x = match selection_mask(&x, p, offset, &w.positions, &w.units)? {
                None => edited,
                // x + m·(edited − x): differentiable in both x and the edit.
                Some(mask) => (&x + (edited - &x)?.broadcast_mul(&mask)?)?,
            };
        }
        if self.readers.contains(&p) {
            cache.insert(p, x.clone());
        }
        Ok(x)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook {point}: layer out of range (model has {n_layers} layers)")]
    LayerOutOfRange { point: HookPoint, n_layers: usize },
}

/// Activations cached by readers, by hook point.
#[derive(Debug, Clone, Default)]
pub struct ActivationCache {
    map: HashMap<HookPoint, Tensor>,
}

impl ActivationCache {
    pub fn get(&self, p: HookPoint) -> Option<&Tensor> {
        self.map.get(&p)
    }
    pub fn insert(&mut self, p: HookPoint, t: Tensor) {
        self.map.insert(p, t);
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&HookPoint, &Tensor)> {
        self.map.iter()
    }
    /// Append a later chunk (KV-cache generation) along the position axis.
    pub fn extend_positions(&mut self, other: ActivationCache) -> candle_core::Result<()> {
        for (p, t) in other.map {
            let merged = match self.map.remove(&p) {
                Some(prev) => Tensor::cat(&[&prev, &t], position_axis(p))?,
                None => t,
            };
            self.map.insert(p, merged);
        }
        Ok(())
    }
}

fn position_axis(p: HookPoint) -> usize {
    match p.unit_axis() {
        UnitAxis::PatternHead => 2,
        _ => 1,
    }
}

fn position_len(x: &Tensor, p: HookPoint) -> candle_core::Result<usize> {
    x.dim(position_axis(p))
}

/// A 0/1 mask broadcastable to `x` that selects the writer's positions and units, or
/// `None` when the writer covers the whole tensor.
fn selection_mask(
    x: &Tensor,
    p: HookPoint,
    offset: usize,
    positions: &Positions,
    units: &Units,
) -> candle_core::Result<Option<Tensor>> {
    if *positions == Positions::All && *units == Units::All {
        return Ok(None);
    }
    let dims = x.dims();
    let axis = p.unit_axis();
    let (t, n_units) = match axis {
        UnitAxis::Feature => (dims[1], dims[2]),
        UnitAxis::Head => (dims[1], dims[2]),
        UnitAxis::PatternHead => (dims[2], dims[1]),
    };
    let pos_on: Vec<f32> = (0..t)
        .map(|i| match positions {
            Positions::All => 1.0,
            Positions::Only(s) => f32::from(u8::from(s.contains(&(offset + i)))),
        })
        .collect();
    if let Units::Only(s) = units {
        if let Some(&max) = s.iter().next_back() {
            if max >= n_units {
                candle_core::bail!("hook {p}: unit {max} out of range ({n_units} units)");
            }
        }
    }
    let unit_on: Vec<f32> = (0..n_units)
        .map(|u| match units {
            Units::All => 1.0,
            Units::Only(s) => f32::from(u8::from(s.contains(&u))),
        })
        .collect();
    let dev = x.device();
    let pos = Tensor::from_vec(pos_on, t, dev)?;
    let unit = Tensor::from_vec(unit_on, n_units, dev)?;
    let mask = match axis {
        // [1, t, units]
        UnitAxis::Feature => pos
            .unsqueeze(1)?
            .broadcast_mul(&unit.unsqueeze(0)?)?
            .unsqueeze(0)?,
        // [1, t, heads, 1]
        UnitAxis::Head => pos
            .unsqueeze(1)?
            .broadcast_mul(&unit.unsqueeze(0)?)?
            .unsqueeze(0)?
            .unsqueeze(3)?,
        // [1, heads, t, 1]
        UnitAxis::PatternHead => unit
            .unsqueeze(1)?
            .broadcast_mul(&pos.unsqueeze(0)?)?
            .unsqueeze(0)?
            .unsqueeze(3)?,
    };
    mask.to_dtype(x.dtype()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn names_round_trip() {
        let table = [
            ("hook_embed", HookPoint::Embed),
            ("blocks.0.hook_resid_pre", HookPoint::ResidPre(0)),
            ("blocks.3.hook_resid_mid", HookPoint::ResidMid(3)),
            ("blocks.29.hook_resid_post", HookPoint::ResidPost(29)),
            ("blocks.1.attn.hook_q", HookPoint::AttnQ(1)),
            ("blocks.1.attn.hook_k", HookPoint::AttnK(1)),
            ("blocks.1.attn.hook_v", HookPoint::AttnV(1)),
            ("blocks.12.attn.hook_z", HookPoint::AttnZ(12)),
            ("blocks.2.attn.hook_pattern", HookPoint::AttnPattern(2)),
            ("blocks.2.hook_attn_out", HookPoint::AttnOut(2)),
            ("blocks.4.mlp.hook_pre", HookPoint::MlpPre(4)),
            ("blocks.4.mlp.hook_post", HookPoint::MlpPost(4)),
            ("blocks.4.hook_mlp_out", HookPoint::MlpOut(4)),
        ];
        for (s, p) in table {
            assert_eq!(s.parse::<HookPoint>().unwrap(), p, "{s}");
            assert_eq!(p.to_string(), s);
        }
        for p in HookPoint::all(3) {
            assert_eq!(p.to_string().parse::<HookPoint>().unwrap(), p);
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        for s in [
            "",
            "hook_embeds",
            "blocks.hook_resid_pre",
            "blocks.x.hook_resid_pre",
            "blocks.01.hook_resid_pre",
            "blocks.+1.hook_resid_pre",
            "blocks.1.hook_resid",
            "blocks.1.attn.hook_zz",
            "blocks.-1.hook_mlp_out",
        ] {
            let e = s.parse::<HookPoint>().unwrap_err();
            assert!(e.to_string().contains(&format!("'{s}'")), "{e}");
        }
    }

    #[test]
    fn writer_touches_only_selected_positions_and_units() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 4, 3), DType::F32, &dev).unwrap();
        let hooks = Hooks::new()
            .write(
                Writer::new(
                    HookPoint::ResidPost(0),
                    AddTensor(Tensor::new(&[1f32, 2., 3.], &dev).unwrap()),
                )
                .at_positions(Positions::only([5]))
                .at_units(Units::only([0, 2])),
            )
            .read(HookPoint::ResidPost(0));
        let mut cache = ActivationCache::default();
        // offset 3: this call covers absolute positions 3..7, so only row 2 is position 5.
        let y = hooks
            .apply(HookPoint::ResidPost(0), x, 3, &mut cache)
            .unwrap();
        let got = y.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(
            got,
            vec![
                vec![0., 0., 0.],
                vec![0., 0., 0.],
                vec![1., 0., 3.],
                vec![0., 0., 0.]
            ]
        );
        assert!(cache.get(HookPoint::ResidPost(0)).is_some());
    }

    #[test]
    fn project_out_removes_the_direction() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[[3f32, 4.0, 1.0]]], &dev).unwrap();
        let u = Tensor::new(&[0f32, 2.0, 0.0], &dev).unwrap();
        let ctx = EditCtx {
            point: HookPoint::ResidPost(0),
            offset: 0,
        };
        let y = ProjectOut(u).apply(&x, &ctx).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![3., 0., 1.]
        );
    }

    #[test]
    fn validate_rejects_out_of_range_layers() {
        let hooks = Hooks::new().read(HookPoint::ResidPost(30));
        assert!(hooks.validate(30).is_err());
        assert!(hooks.validate(31).is_ok());
    }
}
