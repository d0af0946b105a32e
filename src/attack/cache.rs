//! Fitted attacks cached on disk, keyed by what they were fitted from: `<dir>/<key>.
//! safetensors` (the tensors) and `<key>.json` (how the fit went). Both are written
//! beside their names and renamed, the JSON last and holding the tensors' sha256, so a
//! damaged or half-written pair is refitted, never used.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;

/// The cached tensors and metadata under `key`, or `None` (absent, damaged) to refit.
pub fn load(dir: &Path, key: &str) -> Option<(BTreeMap<String, Tensor>, Value)> {
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{key}.json"))).ok()?).ok()?;
    let tpath = dir.join(format!("{key}.safetensors"));
    let bytes = std::fs::read(&tpath).ok()?;
    let sum = crate::assets::sha256_hex(&bytes);
    if meta["tensors_sha256"].as_str() != Some(sum.as_str()) {
        eprintln!(
            "scalpel: cached attack {}: does not match its sha256; fitting it again",
            tpath.display()
        );
        return None;
    }
    let t = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).ok()?;
    Some((t.into_iter().collect(), meta))
}

/// Cache `tensors` and `meta` (an object) under `key`; a cache that cannot be written
/// costs a refit next time, nothing more.
pub fn save(dir: &Path, key: &str, tensors: &BTreeMap<String, Tensor>, mut meta: Value) {
    let _ = std::fs::create_dir_all(dir);
    let tpath = dir.join(format!("{key}.safetensors"));
    let tmp = dir.join(format!(".{key}.safetensors.tmp{}", std::process::id()));
    let mut map = HashMap::new();
    for (k, t) in tensors {
        let Ok(t) = t.to_device(&Device::Cpu) else {
            return;
        };
        map.insert(k.clone(), t);
    }
    if candle_core::safetensors::save(&map, &tmp).is_err() {
        return;
    }
    let Ok(bytes) = std::fs::read(&tmp) else {
        return;
    };
    if std::fs::rename(&tmp, &tpath).is_err() {
        return;
    }
    meta["tensors_sha256"] = Value::String(crate::assets::sha256_hex(&bytes));
    let _ = crate::store::write_atomic(
        &dir.join(format!("{key}.json")),
        meta.to_string().as_bytes(),
    );
}
