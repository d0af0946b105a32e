//! The report's charts as inline SVG: forest plots of gate effects with their intervals
//! and thresholds, line charts (the site sweep's per-layer effects), and histograms.
//! Plain SVG with a `<title>` on every mark, so a page shows values on hover and needs
//! no script or network.

use std::fmt::Write;

/// Colours of a verdict (pass, fail, underpowered, inconclusive, error) and of chart series.
pub fn outcome_colour(outcome: &str) -> &'static str {
    match outcome {
        "pass" => "#1a7f37",
        "fail" => "#cf222e",
        "underpowered" => "#bf8700",
        "inconclusive" => "#8250df",
        _ => "#6e7781",
    }
}

pub const SERIES: [&str; 6] = [
    "#0969da", "#cf222e", "#8250df", "#1a7f37", "#bf8700", "#57606a",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How a chart writes its axis values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Units {
    /// 0.123 → "+12.3%".
    Percent,
    Plain,
}

impl Units {
    pub fn fmt(self, v: f64) -> String {
        match self {
            Units::Percent => format!("{:+.1}%", v * 100.0),
            Units::Plain => {
                if v.abs() >= 100.0 {
                    format!("{v:.0}")
                } else if v.abs() >= 1.0 {
                    format!("{v:.2}")
                } else {
                    format!("{v:.3}")
                }
            }
        }
    }
}

/// "Nice" tick positions covering [lo, hi].
fn ticks(lo: f64, hi: f64, want: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / want.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= want as f64)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// One row of a forest plot.
#[derive(Debug, Clone)]
pub struct ForestRow {
    pub label: String,
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
    pub outcome: String,
}

/// A vertical reference line (zero, a margin) or band (an acceptable range).
#[derive(Debug, Clone)]
pub enum Mark {
    Line { at: f64, label: String },
    Band { lo: f64, hi: f64, label: String },
}

/// A forest plot: one row per estimate, a dot and its interval, with reference marks.
pub fn forest(title: &str, rows: &[ForestRow], marks: &[Mark], units: Units) -> String {
    let (w, left, right, top, row_h) = (640.0, 150.0, 24.0, 48.0, 26.0);
    let h = top + row_h * rows.len() as f64 + 34.0;
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for r in rows {
        for v in [r.lo, r.hi, r.estimate] {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    for m in marks {
        let vs = match m {
            Mark::Line { at, .. } => vec![*at],
            Mark::Band { lo, hi, .. } => vec![*lo, *hi],
        };
        for v in vs.into_iter().filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (-1.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-6);
    let (lo, hi) = (lo - pad, hi + pad);
    let x = |v: f64| left + (v - lo) / (hi - lo) * (w - left - right);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart forest" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><text x="{left}" y="18" class="title">{t}</text>"#,
        t = esc(title)
    );
    let y0 = top - 6.0;
    let y1 = top + row_h * rows.len() as f64;
    for m in marks {
        match m {
            Mark::Band {
                lo: a,
                hi: b,
                label,
            } => {
                let _ = write!(
                    s,
                    r##"<rect x="{:.1}" y="{y0}" width="{:.1}" height="{:.1}" fill="#dafbe1"><title>{}</title></rect>"##,
                    x(*a),
                    (x(*b) - x(*a)).max(0.5),
                    y1 - y0,
                    esc(label)
                );
            }
            Mark::Line { at, label } => {
                // Zero is the axis's own tick; only a margin gets a dashed, labelled line.
                let (dash, text) = if *at == 0.0 {
                    ("", String::new())
                } else {
                    (
                        r#" stroke-dasharray="4 3""#,
                        format!(
                            r#"<text x="{:.1}" y="{:.1}" class="mark" text-anchor="middle">{}</text>"#,
                            x(*at),
                            y0 - 4.0,
                            esc(label)
                        ),
                    )
                };
                let _ = write!(
                    s,
                    r##"<line x1="{xa:.1}" x2="{xa:.1}" y1="{y0}" y2="{y1}" stroke="#57606a"{dash}><title>{}</title></line>{text}"##,
                    esc(label),
                    xa = x(*at)
                );
            }
        }
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + row_h * i as f64 + row_h / 2.0;
        let c = outcome_colour(&r.outcome);
        let tip = format!(
            "{}: {} [{}, {}] ({})",
            r.label,
            units.fmt(r.estimate),
            units.fmt(r.lo),
            units.fmt(r.hi),
            r.outcome
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="label" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + 4.0,
            esc(&r.label)
        );
        if r.lo.is_finite() && r.hi.is_finite() {
            let _ = write!(
                s,
                r#"<line class="ci" x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{c}" stroke-width="3"><title>{}</title></line>"#,
                x(r.lo),
                x(r.hi),
                esc(&tip)
            );
        }
        if r.estimate.is_finite() {
            let _ = write!(
                s,
                r#"<circle class="estimate" cx="{:.1}" cy="{y:.1}" r="5" fill="{c}"><title>{}</title></circle>"#,
                x(r.estimate),
                esc(&tip)
            );
        }
    }
    let ya = y1 + 22.0;
    for t in ticks(lo, hi, 6) {
        let _ = write!(
            s,
            r##"<line x1="{xt:.1}" x2="{xt:.1}" y1="{y1}" y2="{:.1}" stroke="#8c959f"/><text x="{xt:.1}" y="{ya:.1}" class="tick" text-anchor="middle">{}</text>"##,
            y1 + 4.0,
            units.fmt(t),
            xt = x(t)
        );
    }
    s.push_str("</svg>");
    s
}

/// One series of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart with markers, a legend, and optional highlighted x positions.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    highlight: &[f64],
) -> String {
    let (w, h, left, right, top, bottom) = (660.0, 260.0, 60.0, 170.0, 30.0, 40.0);
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(a, b) in pts.filter(|p| p.0.is_finite() && p.1.is_finite()) {
        x0 = x0.min(a);
        x1 = x1.max(a);
        y0 = y0.min(b);
        y1 = y1.max(b);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    y0 = y0.min(0.0);
    y1 = y1.max(0.0);
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let px = |a: f64| left + (a - x0) / (x1 - x0) * (w - left - right);
    let py = |b: f64| top + (y1 - b) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart lines" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><text x="{left}" y="18" class="title">{t}</text>"#,
        t = esc(title)
    );
    for hx in highlight {
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{top}" width="10" height="{:.1}" fill="#fff8c5"><title>chosen site</title></rect>"##,
            px(*hx) - 5.0,
            h - top - bottom
        );
    }
    for t in ticks(y0, y1, 5) {
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{yt:.1}" y2="{yt:.1}" stroke="{}" /><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            w - right,
            if t == 0.0 { "#57606a" } else { "#eaeef2" },
            left - 6.0,
            py(t) + 4.0,
            Units::Plain.fmt(t),
            yt = py(t)
        );
    }
    for t in ticks(x0, x1, 10) {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"#,
            px(t),
            h - bottom + 16.0,
            Units::Plain.fmt(t)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text><text x="14" y="{:.1}" class="axis" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
        (left + w - right) / 2.0,
        h - 6.0,
        esc(x_label),
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0,
        esc(y_label)
    );
    for (k, se) in series.iter().enumerate() {
        let c = SERIES[k % SERIES.len()];
        let path: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(a, b)| format!("{:.1},{:.1}", px(a), py(b)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="series" fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(a, b) in se
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
        {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{}: {} at {}</title></circle>"#,
                px(a),
                py(b),
                esc(&se.name),
                Units::Plain.fmt(b),
                Units::Plain.fmt(a)
            );
        }
        let ly = top + 16.0 * k as f64 + 8.0;
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="4" fill="{c}"/><text x="{:.1}" y="{:.1}" class="legend">{}</text>"#,
            w - right + 10.0,
            ly - 2.0,
            w - right + 26.0,
            ly + 3.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Overlaid histograms (step outlines) of values in [lo, hi], one per series, as shares.
pub fn histograms(
    title: &str,
    x_label: &str,
    series: &[(String, Vec<f64>)],
    lo: f64,
    hi: f64,
    bins: usize,
) -> String {
    let bins = bins.max(1);
    let width = (hi - lo) / bins as f64;
    let as_series: Vec<Series> = series
        .iter()
        .map(|(name, vals)| {
            let mut counts = vec![0usize; bins];
            let finite: Vec<f64> = vals.iter().copied().filter(|v| v.is_finite()).collect();
            for v in &finite {
                let b = (((v - lo) / width).floor().max(0.0) as usize).min(bins - 1);
                counts[b] += 1;
            }
            let n = finite.len().max(1) as f64;
            Series {
                name: name.clone(),
                points: counts
                    .iter()
                    .enumerate()
                    .map(|(b, c)| (lo + width * (b as f64 + 0.5), *c as f64 / n))
                    .collect(),
            }
        })
        .collect();
    lines(title, x_label, "share of items", &as_series, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_the_range_with_round_steps() {
        assert_eq!(
            ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let t = ticks(-0.37, 0.12, 6);
        assert!(t.first().unwrap() >= &-0.37 && t.last().unwrap() <= &0.12);
        assert!(t.contains(&0.0));
    }

    #[test]
    fn a_forest_plot_has_a_dot_and_an_interval_per_row() {
        let rows = vec![
            ForestRow {
                label: "offset".into(),
                estimate: -0.12,
                lo: -0.2,
                hi: -0.03,
                outcome: "pass".into(),
            },
            ForestRow {
                label: "ablate <b>".into(),
                estimate: 0.08,
                lo: f64::NAN,
                hi: f64::NAN,
                outcome: "error".into(),
            },
        ];
        let svg = forest(
            "realtoxicityprompts::max_toxicity",
            &rows,
            &[Mark::Line {
                at: 0.0,
                label: "0".into(),
            }],
            Units::Percent,
        );
        assert_eq!(svg.matches("class=\"estimate\"").count(), 2);
        assert_eq!(
            svg.matches("class=\"ci\"").count(),
            1,
            "no interval for NaN bounds"
        );
        assert!(svg.contains("ablate &lt;b&gt;"));
        assert!(svg.contains("-12.0%"));
    }
}
