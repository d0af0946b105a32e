//! HTML reports of stored runs: `scalpel report RUN` ([`run_page`]) and `scalpel compare
//! RUN_A RUN_B` ([`compare`]). Pages are self-contained (inline CSS and SVG charts from
//! [`charts`], no script, nothing fetched), rendered with minijinja from templates built
//! into the binary.

pub mod attacks;
pub mod charts;
pub mod compare;
pub mod run_page;

use std::path::{Path, PathBuf};

use minijinja::Environment;

use crate::store::tables::Run;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, src) in [
        ("base.html", include_str!("templates/base.html")),
        ("run.html", include_str!("templates/run.html")),
        ("compare.html", include_str!("templates/compare.html")),
        ("style.css", include_str!("templates/style.css")),
    ] {
        env.add_template(name, src)
            .expect("the built-in templates parse (checked by the report tests)");
    }
    env
}

pub(crate) fn render(name: &str, ctx: impl serde::Serialize) -> Result<String, ReportError> {
    let env = environment();
    let t = env.get_template(name).map_err(|e| ReportError::Template {
        name: name.into(),
        message: e.to_string(),
    })?;
    t.render(ctx).map_err(|e| ReportError::Template {
        name: name.into(),
        message: format!("{e:#}"),
    })
}

/// Render the run stored in `dir` to `dir/report.html`; returns that path.
pub fn render_run_dir(dir: &Path) -> Result<PathBuf, ReportError> {
    let run = Run::read(dir)?;
    let html = run_page::render(&run)?;
    let out = dir.join("report.html");
    crate::store::write_atomic(&out, html.as_bytes())?;
    Ok(out)
}
