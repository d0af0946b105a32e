//! The run store and its reports on real runs of SmolLM2: a run killed mid-way resumes
//! and ends equal to an uninterrupted one; the HTML report renders its charts in a real
//! browser (Debian's headless Chromium, installed by `.ci/run`); `scalpel compare` pairs
//! two runs' items and flags a regression.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use scalpel::store::tables::Run;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scalpel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(args)
        .output()
        .expect("run scalpel")
}

fn test_run(suite: &Path, runs: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "test",
        suite.to_str().unwrap(),
        "--device",
        "cpu",
        "--runs",
        runs.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    scalpel(&args)
}

fn only_run(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// Items by (intervention, task, metric, idx); panics on a duplicate.
fn items(run: &Run) -> BTreeMap<(String, String, String, u64), Option<f64>> {
    let mut m = BTreeMap::new();
    for i in &run.items {
        let k = (
            i.intervention.clone(),
            i.task.clone(),
            i.metric.clone(),
            i.idx,
        );
        assert!(
            m.insert(k.clone(), i.value).is_none(),
            "duplicate item {k:?}"
        );
    }
    m
}

#[test]
fn an_interrupted_run_resumes_and_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("resume.yaml");
    // 70 LAMBADA passages: two parts (64 and 6).
    fs::write(
        &suite,
        "name: resume\ninterventions:\n  - {name: none}\n\
         tasks:\n  - {task: lambada_openai, limit: 70}\n\
         gates:\n  - {task: lambada_openai, metric: acc, within: [0.0, 1.0]}\n",
    )
    .unwrap();
    let whole = dir.path().join("whole");
    let o = test_run(&suite, &whole, &[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains("(2 parts computed, 0 resumed)"));
    let want = items(&Run::read(&only_run(&whole)).unwrap());
    assert_eq!(want.len(), 70 * 2, "acc and loglikelihood per passage");

    // Kill it (SIGKILL) once the first part is journalled.
    let broken = dir.path().join("broken");
    let mut child = Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args([
            "test",
            suite.to_str().unwrap(),
            "--device",
            "cpu",
            "--runs",
            broken.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let began = Instant::now();
    let journal = loop {
        let j = fs::read_dir(&broken)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path().join("journal/none--lambada_openai.jsonl"));
        if let Some(j) = j.filter(|j| fs::read_to_string(j).is_ok_and(|t| t.contains('\n'))) {
            break j;
        }
        assert!(
            began.elapsed() < Duration::from_secs(600),
            "no part journalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let run_dir = journal.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(
        !run_dir.join("items.parquet").exists(),
        "the run finished before it was killed"
    );
    let done = fs::read_to_string(&journal).unwrap().lines().count();
    assert_eq!(done, 1, "one part journalled at the kill");

    let o = test_run(&suite, &broken, &[]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains("(1 parts computed, 1 resumed)"), "{out}");
    let got = items(&Run::read(&run_dir).unwrap());
    assert_eq!(got.len(), want.len(), "no item missing or duplicated");
    for (k, v) in &want {
        let g = got.get(k).unwrap_or_else(|| panic!("{k:?} missing"));
        match (v, g) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-6, "{k:?}: {a} vs {b}"),
            _ => assert_eq!(v, g, "{k:?}"),
        }
    }
}

fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(o) = Command::new("which").arg(c).output() {
            if o.status.success() {
                return PathBuf::from(text(&o.stdout).trim());
            }
        }
    }
    panic!(
        "the browser test needs headless Chromium: `apt-get install chromium` \
         (what .ci/run does)"
    );
}

/// A screenshot of `html` as RGBA rows.
fn screenshot(html: &Path, png_out: &Path) -> (usize, usize, Vec<u8>) {
    let o = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,2600",
            &format!("--screenshot={}", png_out.display()),
            &format!("file://{}", html.display()),
        ])
        .output()
        .unwrap();
    assert!(
        png_out.exists(),
        "chromium wrote no screenshot: {}",
        text(&o.stderr)
    );
    let dec = png::Decoder::new(fs::File::open(png_out).unwrap());
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    let px = buf[..info.buffer_size()]
        .chunks(ch)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    (info.width as usize, info.height as usize, px)
}

fn count(px: &[u8], f: impl Fn(u8, u8, u8) -> bool) -> usize {
    px.chunks(4).filter(|p| f(p[0], p[1], p[2])).count()
}

fn near(p: (u8, u8, u8), c: (u8, u8, u8)) -> bool {
    p.0.abs_diff(c.0) < 12 && p.1.abs_diff(c.1) < 12 && p.2.abs_diff(c.2) < 12
}

/// A run with an intervention that harms (an offset 4× too strong), so the report has a
/// failing and a passing gate, and `compare` against the plain model flags regressions.
#[test]
fn the_report_renders_its_charts_in_chromium_and_compare_flags_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("fit.yaml"), common::offset_fit_config(4.0)).unwrap();
    let suite = dir.path().join("report.yaml");
    fs::write(
        &suite,
        "name: report\ninterventions:\n  - {name: none}\n  - {name: steer, fit: fit.yaml}\n\
         tasks:\n  - {task: lambada_openai, limit: 24}\n  - {task: crows_pairs_english, limit: 20}\n\
         gates:\n\
         \x20 - {task: lambada_openai, metric: acc, non_inferiority: 0.02}\n\
         \x20 - {task: crows_pairs_english, metric: pct_stereotype, within: [0.0, 1.0]}\n\
         traces:\n  - {prompt: \"The Eiffel Tower is in the city of\", subject: Eiffel Tower, samples: 2}\n",
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let o = test_run(&suite, &runs, &[]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(101), "{out}{}", text(&o.stderr));
    let run_dir = only_run(&runs);
    let html = run_dir.join("report.html");
    let page = fs::read_to_string(&html).unwrap();
    for fetched in ["src=\"http", "href=\"http", "<script", "@import"] {
        assert!(
            !page.contains(fetched),
            "the page must be self-contained: {fetched}"
        );
    }
    assert!(page.contains("steer::lambada_openai::acc"));
    assert_eq!(
        page.matches("class=\"chart forest\"").count(),
        2,
        "a forest per gate"
    );

    // In the browser: the charts draw (the failing gate's red estimate and interval
    // among them), which a copy of the page without its SVG does not.
    let shot = dir.path().join("report.png");
    let (w, h, px) = screenshot(&html, &shot);
    assert!(w >= 1000 && h >= 1000, "{w}x{h}");
    let bare_html = dir.path().join("bare.html");
    fs::write(
        &bare_html,
        page.replace("</style>", "svg { display: none; }</style>"),
    )
    .unwrap();
    let (_, _, bare) = screenshot(&bare_html, &dir.path().join("bare.png"));
    let red = |r, g, b| near((r, g, b), (0xcf, 0x22, 0x2e));
    let ink = |r: u8, g: u8, b: u8| (r as u32 + g as u32 + b as u32) < 600;
    let (red_with, red_without) = (count(&px, red), count(&bare, red));
    assert!(
        red_with > red_without + 40,
        "the failing gate's mark is not drawn: {red_with} red pixels with charts, {red_without} without"
    );
    let (ink_with, ink_without) = (count(&px, ink), count(&bare, ink));
    assert!(
        ink_with > ink_without + 2000,
        "charts add no ink: {ink_with} vs {ink_without}"
    );
    eprintln!("report screenshot {w}x{h}: {red_with} red px (bare {red_without}), ink {ink_with} (bare {ink_without})");
    if let Ok(keep) = std::env::var("SCALPEL_KEEP_SCREENSHOT") {
        fs::copy(&shot, keep).unwrap();
    }

    // `scalpel report` renders the same page again from the tables alone.
    let again = dir.path().join("again.html");
    let o = scalpel(&[
        "report",
        run_dir.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(fs::read_to_string(&again).unwrap(), page);

    // Compare: the same suite with a mild offset (A) against the harmful one (B). Items
    // pair by intervention, task and dataset index; `none` is the same model in both.
    fs::write(
        dir.path().join("mild.yaml"),
        common::offset_fit_config(0.05),
    )
    .unwrap();
    let mild = dir.path().join("mild-suite.yaml");
    // Without the trace, which only the first run's report needs.
    let body = fs::read_to_string(&suite).unwrap();
    let without_trace = &body[..body.find("traces:").unwrap()];
    fs::write(&mild, without_trace.replace("fit.yaml", "mild.yaml")).unwrap();
    let runs_a = dir.path().join("runs-a");
    let o = test_run(&mild, &runs_a, &[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let page_out = dir.path().join("compare.html");
    let o = scalpel(&[
        "compare",
        only_run(&runs_a).to_str().unwrap(),
        run_dir.to_str().unwrap(),
        "--out",
        page_out.to_str().unwrap(),
    ]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(
        out.contains("regression: steer::lambada_openai::loglikelihood"),
        "{out}"
    );
    assert!(
        !out.contains("regression: none::"),
        "the plain model did not change: {out}"
    );
    let cmp = fs::read_to_string(&page_out).unwrap();
    assert!(
        cmp.contains("class=\"chart forest\""),
        "compare page has its forest plots"
    );
    assert!(cmp.contains("<tr class=\"regression\">"));
    let bad = scalpel(&["report", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("nope"), "{}", text(&bad.stderr));
}

/// A suite's traces are fixtures: a second run of the same build, model and trace spec
/// copies the cached trace instead of tracing again (shown by a marker planted in the
/// cache), and another seed traces anew.
#[test]
fn suite_traces_are_cached_as_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let home = common::fresh_home(dir);
    let suite = |seed: u64| {
        let p = dir.join(format!("trace-{seed}.yaml"));
        fs::write(
            &p,
            format!(
                "name: traced\nseed: {seed}\ninterventions:\n  - {{name: none}}\n\
                 tasks:\n  - {{task: copa, limit: 4}}\n\
                 gates:\n  - {{task: copa, metric: acc, within: [0.0, 1.0]}}\n\
                 traces:\n  - {{prompt: \"The Eiffel Tower is in the city of\", subject: Eiffel Tower, samples: 2}}\n"
            ),
        )
        .unwrap();
        p
    };
    let run = |suite: &Path, runs: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_scalpel"))
            .args(["test", suite.to_str().unwrap(), "--model"])
            .arg(common::tiny_gpt2_dir())
            .args(["--device", "cpu", "--runs"])
            .arg(dir.join(runs))
            .env("SCALPEL_HOME", &home)
            .output()
            .unwrap();
        // The four-item gate is underpowered (101); the run and its trace are stored.
        assert_eq!(
            o.status.code(),
            Some(101),
            "{}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        fs::read_to_string(only_run(&dir.join(runs)).join("traces/0.json")).unwrap()
    };
    let first = run(&suite(0), "a");
    assert!(first.contains("\"effect\""), "{first}");
    let cache = home.join("fixtures/traces");
    let entries: Vec<PathBuf> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        fs::read_to_string(entries[0].join("trace.json")).unwrap(),
        first
    );
    let marker = "{\"planted\": true}";
    fs::write(entries[0].join("trace.json"), marker).unwrap();
    assert_eq!(run(&suite(0), "b"), marker);
    let other = run(&suite(1), "c");
    assert!(other.contains("\"effect\""), "{other}");
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 2);
}
