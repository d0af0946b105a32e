//! Heatmaps as standalone SVG, in the layout of ROME's Figure 1: tokens down the side
//! (subject tokens marked `*` by the caller), layers across, a colour bar with the value
//! label at the right. Dependency-free, deterministic for equal input, and every cell
//! carries a `<title>` so a browser shows its value on hover.

use std::fmt::Write;

/// Cell colours: ROME uses purple for the residual stream, green for MLPs, red for
/// attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    Purples,
    Greens,
    Reds,
}

impl Palette {
    /// The darkest colour; the scale runs from white to it.
    fn dark(self) -> (f64, f64, f64) {
        match self {
            Palette::Purples => (63.0, 0.0, 125.0),
            Palette::Greens => (0.0, 68.0, 27.0),
            Palette::Reds => (103.0, 0.0, 13.0),
        }
    }

    fn at(self, x: f64) -> String {
        let x = x.clamp(0.0, 1.0);
        let (r, g, b) = self.dark();
        let mix = |c: f64| (255.0 + (c - 255.0) * x).round() as u8;
        format!("#{:02x}{:02x}{:02x}", mix(r), mix(g), mix(b))
    }
}

pub struct Heatmap<'a> {
    pub title: &'a str,
    /// One label per row (the input tokens, subject tokens already marked).
    pub row_labels: &'a [String],
    /// One label per column (layer numbers).
    pub col_labels: &'a [String],
    /// `values[row][col]`; NaN cells are grey and left out of the scale.
    pub values: &'a [Vec<f64>],
    /// Beside the colour bar, e.g. "p(Paris) restored − corrupted".
    pub value_label: &'a str,
    pub palette: Palette,
    /// Under the column labels, e.g. "single restored layer".
    pub x_label: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SvgError {
    #[error("heatmap: no cells")]
    Empty,
    #[error("heatmap: {expected} row labels expected (one per row), got {got}")]
    RowLabels { expected: usize, got: usize },
    #[error("heatmap: row {row} has {got} values, expected {expected} (one per column label)")]
    Ragged {
        row: usize,
        expected: usize,
        got: usize,
    },
}

const CELL: f64 = 20.0;
const FONT: &str = "font-family=\"Helvetica, Arial, sans-serif\"";

pub fn render(h: &Heatmap) -> Result<String, SvgError> {
    let (rows, cols) = (h.values.len(), h.col_labels.len());
    if rows == 0 || cols == 0 {
        return Err(SvgError::Empty);
    }
    if h.row_labels.len() != rows {
        return Err(SvgError::RowLabels {
            expected: rows,
            got: h.row_labels.len(),
        });
    }
    if let Some((row, r)) = h.values.iter().enumerate().find(|(_, r)| r.len() != cols) {
        return Err(SvgError::Ragged {
            row,
            expected: cols,
            got: r.len(),
        });
    }
    let finite = h.values.iter().flatten().copied().filter(|x| x.is_finite());
    let (lo, hi) = finite.fold((0.0f64, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let hi = if hi.is_finite() && hi > lo {
        hi
    } else {
        lo + 1.0
    };
    let scale = |x: f64| (x - lo) / (hi - lo);

    let labels: Vec<String> = h.row_labels.iter().map(|l| label(l)).collect();
    let label_w = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as f64 * 7.0 + 12.0;
    let (left, top) = (label_w.max(40.0), 44.0);
    let grid_w = cols as f64 * CELL;
    let grid_h = rows as f64 * CELL;
    let bar_x = left + grid_w + 24.0;
    let width = bar_x + 14.0 + 70.0;
    let height = top + grid_h + 56.0;

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"20\" {FONT} font-size=\"13\" text-anchor=\"middle\">{}</text>",
        width / 2.0,
        esc(h.title)
    );
    for (r, row) in h.values.iter().enumerate() {
        let y = top + r as f64 * CELL;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y + CELL * 0.7,
            esc(&labels[r])
        );
        for (c, &v) in row.iter().enumerate() {
            let fill = if v.is_finite() {
                h.palette.at(scale(v))
            } else {
                "#bdbdbd".into()
            };
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{fill}\">\
                 <title>{}, {}: {v:.4}</title></rect>",
                left + c as f64 * CELL,
                esc(&labels[r]),
                esc(&h.col_labels[c])
            );
        }
    }
    // Column labels: all of them up to 20 columns, else every other one.
    let step = if cols > 20 { 2 } else { 1 };
    for c in (0..cols).step_by(step) {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"10\" text-anchor=\"middle\">{}</text>",
            left + (c as f64 + 0.5) * CELL,
            top + grid_h + 14.0,
            esc(&h.col_labels[c])
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"12\" text-anchor=\"middle\">{}</text>",
        left + grid_w / 2.0,
        top + grid_h + 34.0,
        esc(h.x_label)
    );
    // Colour bar: 24 steps, high at the top, with five ticks.
    let steps = 24;
    let step_h = grid_h / steps as f64;
    for i in 0..steps {
        let x = 1.0 - (i as f64 + 0.5) / steps as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{bar_x:.1}\" y=\"{:.2}\" width=\"14\" height=\"{:.2}\" fill=\"{}\"/>",
            top + i as f64 * step_h,
            step_h + 0.3,
            h.palette.at(x)
        );
    }
    for k in 0..5 {
        let f = k as f64 / 4.0;
        let v = lo + (hi - lo) * f;
        let y = top + grid_h * (1.0 - f);
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"10\">{}</text>",
            bar_x + 18.0,
            y + 3.5,
            tick(v)
        );
    }
    let _ = writeln!(
        s,
        "<text {FONT} font-size=\"11\" text-anchor=\"middle\" \
         transform=\"translate({:.1},{:.1}) rotate(90)\">{}</text>",
        bar_x + 62.0,
        top + grid_h / 2.0,
        esc(h.value_label)
    );
    s.push_str("</svg>\n");
    Ok(s)
}

/// Whitespace made visible, long labels cut.
fn label(l: &str) -> String {
    let l = l.replace('\n', "\\n").replace('\t', "\\t");
    if l.chars().count() > 24 {
        let mut t: String = l.chars().take(23).collect();
        t.push('…');
        t
    } else {
        l
    }
}

fn tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\x{:02x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// A trace's heatmap in ROME's orientation (tokens down, subject tokens marked `*`, layers
/// across), coloured by what was restored.
pub fn trace_heatmap(r: &super::causal::TraceResult, model_name: &str) -> Result<String, SvgError> {
    use super::causal::TraceKind;
    let rows: Vec<String> = r
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if r.subject_positions.contains(&i) {
                format!("{t}*")
            } else {
                t.clone()
            }
        })
        .collect();
    let cols: Vec<String> = r.layers.iter().map(|l| l.to_string()).collect();
    let values: Vec<Vec<f64>> = (0..r.tokens.len())
        .map(|p| r.effect.iter().map(|layer| layer[p]).collect())
        .collect();
    let (palette, what) = match r.kind {
        TraceKind::Resid => (Palette::Purples, "single restored layer"),
        TraceKind::Mlp => (Palette::Greens, "center of restored MLP window"),
        TraceKind::Attn => (Palette::Reds, "center of restored attention window"),
    };
    let title = format!(
        "Impact of restoring {} after corrupted input ({model_name}, p_clean {:.3}, p_corrupt {:.3})",
        r.kind, r.p_clean, r.p_corrupt
    );
    let label = match r.target_kind {
        "contrast" => format!("gap {} restored − corrupted", r.target),
        _ => format!("p({}) restored − corrupted", r.target.trim()),
    };
    render(&Heatmap {
        title: &title,
        row_labels: &rows,
        col_labels: &cols,
        values: &values,
        value_label: &label,
        palette,
        x_label: what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(values: Vec<Vec<f64>>, rows: &[&str]) -> Result<String, SvgError> {
        let row_labels: Vec<String> = rows.iter().map(|s| s.to_string()).collect();
        let col_labels: Vec<String> = (0..values.first().map_or(0, Vec::len))
            .map(|c| c.to_string())
            .collect();
        render(&Heatmap {
            title: "t",
            row_labels: &row_labels,
            col_labels: &col_labels,
            values: &values,
            value_label: "v",
            palette: Palette::Purples,
            x_label: "layer",
        })
    }

    #[test]
    fn cells_scale_escaping_and_errors() {
        let s = map(
            vec![vec![0.0, 0.5], vec![1.0, f64::NAN]],
            &["a<&\"b", " c\n"],
        )
        .unwrap();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<title>").count(), 4, "one tooltip per cell");
        assert!(s.contains("a&lt;&amp;&quot;b") && !s.contains("a<&"));
        assert!(s.contains(" c\\n"));
        // The lowest value is white, the highest the darkest, NaN grey.
        assert!(s.contains("fill=\"#ffffff\"><title>a&lt;&amp;&quot;b, 0: 0.0000"));
        assert!(s.contains("fill=\"#3f007d\"><title> c\\n, 0: 1.0000"));
        assert!(s.contains("fill=\"#bdbdbd\"><title> c\\n, 1: NaN"));
        assert_eq!(
            s,
            map(
                vec![vec![0.0, 0.5], vec![1.0, f64::NAN]],
                &["a<&\"b", " c\n"]
            )
            .unwrap()
        );
        assert_eq!(
            map(vec![vec![0.0, 0.5], vec![1.0]], &["a", "b"]),
            Err(SvgError::Ragged {
                row: 1,
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            map(vec![vec![0.0]], &["a", "b"]),
            Err(SvgError::RowLabels {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(map(vec![], &[]), Err(SvgError::Empty));
        // All-equal values do not divide by zero.
        assert!(map(vec![vec![0.0, 0.0]], &["a"])
            .unwrap()
            .contains("#ffffff"));
    }
}
