//! Verdicts as libtest trials (`test offset::copa::acc ... ok`, with the estimate and
//! interval in the trial's kind so every line carries them), and as JUnit XML.

use std::path::Path;

use libtest_mimic::{Arguments, Conclusion, Failed, FormatSetting, Trial};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::run::TrialResult;
use super::suite::Suite;
use crate::stats::gate::{GateKind, Outcome, Verdict};
use crate::stats::paired::Effect;

/// Output formats of `scalpel test`, as libtest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Pretty,
    Terse,
    Json,
}

fn fmt_value(v: f64, effect: Effect) -> String {
    match effect {
        Effect::Relative => format!("{:+.1}%", v * 100.0),
        Effect::Difference => format!("{v:+.4}"),
        Effect::Level => format!("{v:.4}"),
    }
}

/// `−41.2% [−52.0%, −30.1%] n=100`: the estimate and its interval.
pub fn summary(v: &Verdict, effect: Effect) -> String {
    format!(
        "{} [{}, {}] n={}",
        fmt_value(v.estimate.value, effect),
        fmt_value(v.estimate.lo, effect),
        fmt_value(v.estimate.hi, effect),
        v.n
    )
}

/// Why a trial did not pass, in one line.
pub fn explain(suite: &Suite, r: &TrialResult) -> Option<String> {
    let g = &suite.gates[r.gate];
    let effect = g.gate.effect;
    let v = match &r.outcome {
        Ok(v) => v,
        Err(e) => return Some(e.clone()),
    };
    let need = match g.gate.kind {
        GateKind::Superiority { margin } => {
            format!("an improvement beyond {}", fmt_value(margin, effect))
        }
        GateKind::NonInferiority { margin } => {
            format!("a loss smaller than {}", fmt_value(margin, effect))
        }
        GateKind::Within { lo, hi } => format!("a level within [{lo}, {hi}]"),
    };
    let stats = format!(
        "estimate {} ({:.0}% CI), p {:.4}, Holm-adjusted {:.4}, MDE {}",
        summary(v, effect),
        v.estimate.level * 100.0,
        v.p_value,
        v.p_adjusted,
        fmt_value(
            v.mde,
            if effect == Effect::Level {
                Effect::Difference
            } else {
                effect
            }
        )
    );
    match v.outcome {
        Outcome::Pass => None,
        Outcome::Fail => Some(format!("failed: needs {need}; {stats}")),
        Outcome::Underpowered => Some(format!(
            "underpowered: n = {} cannot resolve {need} (MDE exceeds the margin); {stats}",
            v.n
        )),
        Outcome::Inconclusive => Some(format!(
            "inconclusive: {}; {stats}",
            r.caveat
                .as_deref()
                .unwrap_or("the gate's condition did not hold")
        )),
    }
}

/// Print the trials libtest's way and return its conclusion (101 on any failure).
pub fn report(suite: &Suite, results: &[TrialResult], args: &Arguments) -> Conclusion {
    let trials: Vec<Trial> = results
        .iter()
        .map(|r| {
            let g = &suite.gates[r.gate];
            let why = explain(suite, r);
            let kind = match &r.outcome {
                Ok(v) => summary(v, g.gate.effect),
                Err(_) => "error".into(),
            };
            Trial::test(r.name.clone(), move || match why {
                None => Ok(()),
                Some(m) => Err(Failed::from(m)),
            })
            .with_kind(kind)
        })
        .collect();
    libtest_mimic::run(args, trials)
}

/// `--list`: the selected trials' names, nothing run.
pub fn list(suite: &Suite, sel: &super::Selection, args: &Arguments) {
    let trials = suite
        .trial_names()
        .into_iter()
        .filter(|n| sel.admits(n))
        .map(|n| Trial::test(n, || Ok(())))
        .collect();
    let _ = libtest_mimic::run(args, trials);
}

/// 101 when a trial failed (libtest's code), else success.
pub fn exit_code(c: &Conclusion) -> std::process::ExitCode {
    if c.has_failed() {
        std::process::ExitCode::from(101)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// libtest arguments for a run whose selection is already applied.
pub fn arguments(format: Format, list: bool) -> Arguments {
    Arguments {
        list,
        test_threads: Some(1),
        format: Some(match format {
            Format::Pretty => FormatSetting::Pretty,
            Format::Terse => FormatSetting::Terse,
            Format::Json => FormatSetting::Json,
        }),
        ..Arguments::default()
    }
}

/// The trials as a JUnit report (one test case per trial; properties carry the numbers).
pub fn write_junit(suite: &Suite, results: &[TrialResult], path: &Path) -> std::io::Result<()> {
    let mut ts = TestSuite::new(suite.name.clone());
    for r in results {
        let g = &suite.gates[r.gate];
        let why = explain(suite, r);
        let status = match (&r.outcome, &why) {
            (_, None) => TestCaseStatus::success(),
            (Ok(v), Some(m)) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(m.clone()).set_type(match v.outcome {
                    Outcome::Underpowered => "underpowered",
                    Outcome::Inconclusive => "inconclusive",
                    _ => "gate failed",
                });
                s
            }
            (Err(_), Some(m)) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(m.clone()).set_type("error");
                s
            }
        };
        let mut tc = TestCase::new(r.name.clone(), status);
        tc.set_classname(format!("{}::{}", r.intervention, r.task));
        if let Ok(v) = &r.outcome {
            for (k, x) in [
                ("estimate", v.estimate.value),
                ("ci_lo", v.estimate.lo),
                ("ci_hi", v.estimate.hi),
                ("ci_level", v.estimate.level),
                ("p_value", v.p_value),
                ("p_adjusted", v.p_adjusted),
                ("mde", v.mde),
                ("n", v.n as f64),
            ] {
                tc.add_property(Property::new(k, x.to_string()));
            }
        }
        tc.add_property(Property::new("effect", format!("{:?}", g.gate.effect)));
        ts.add_test_case(tc);
    }
    let mut rep = Report::new(format!("scalpel {}", suite.name));
    rep.add_test_suite(ts);
    let xml = rep
        .to_string()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, xml)
}
