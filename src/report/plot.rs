//! Line plots as PNG: plotters' bitmap backend draws into an RGB buffer, text through ab_glyph
//! with a committed subset of DejaVu Sans (no system fonts, no C libraries), and the `png` crate
//! encodes it.

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";
/// Width of every plot image, in pixels.
pub const WIDTH: u32 = 900;
/// Height of every plot image, in pixels.
pub const HEIGHT: u32 = 520;

/// One line: its legend entry, points (x, y), colour and dash.
#[derive(Clone, Debug)]
pub struct Line {
    /// The legend entry.
    pub label: String,
    /// The (x, y) points in drawing order; points with a coordinate that is not finite are
    /// left out.
    pub points: Vec<(f64, f64)>,
    /// The line's colour, e.g. one of [`PALETTE`].
    pub color: RGBColor,
    /// Drawn dashed (markers: triangles) instead of solid (markers: dots); markers show when
    /// the line has at most 60 points.
    pub dashed: bool,
}

/// A plot: lines over a shared x axis, and where the legend goes.
#[derive(Clone, Debug)]
pub struct Plot {
    /// The caption above the chart.
    pub title: String,
    /// The x axis's label.
    pub x_label: String,
    /// The y axis's label.
    pub y_label: String,
    /// The lines, drawn in order.
    pub lines: Vec<Line>,
    /// Stage boundaries on the x axis, drawn as thin vertical rules.
    pub rules: Vec<f64>,
    /// The legend in the lower right corner instead of the upper right.
    pub legend_low: bool,
}

/// Colours that stay apart on white and in grey (Okabe–Ito).
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
];

fn register_font() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| register_font_once(FONT));
    if ok {
        Ok(())
    } else {
        Err(Error::file(
            "src/report/fonts/DejaVuSans-subset.ttf",
            "the embedded font does not parse",
        ))
    }
}

fn register_font_once(bytes: &'static [u8]) -> bool {
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok()
}

/// Values beyond this magnitude are treated as this magnitude: ranges, margins and tick steps
/// computed from them stay finite.
const LIMIT: f64 = 1e300;

/// (lo, hi) of the finite values with a margin, safe for plotters' tick computation (which loops
/// forever on an infinite range, and on one too narrow for its magnitude): never infinite, and at
/// least a millionth of its magnitude wide; a single value gets a range around it.
fn padded_range(values: impl Iterator<Item = f64>, margin: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .map(|v| v.clamp(-LIMIT, LIMIT))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let magnitude = lo.abs().max(hi.abs());
    let least = (magnitude * 1e-6).max(1e-100);
    let span = hi - lo;
    if span < least {
        let d = if magnitude == 0.0 {
            1.0
        } else {
            (magnitude * 0.1).max(least)
        };
        return (lo - d, hi + d);
    }
    (lo - margin * span, hi + margin * span)
}

/// A value is off the scale when it is this many times larger in magnitude than the median (or
/// than 1, for medians below 1): a diverged loss of 1e308 beside losses near 2 would otherwise
/// flatten the rest of the curve into the axis.
pub const OFF_SCALE: f64 = 1e6;

/// The y axis of a plot: the range of the values on the scale, and what was left off it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct YAxis {
    lo: f64,
    hi: f64,
    /// Values beyond [`OFF_SCALE`], drawn at the edge of the axis.
    off_scale: usize,
    /// The largest of them in magnitude (with its sign).
    extreme: f64,
}

impl YAxis {
    fn of(values: &[f64]) -> YAxis {
        let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        finite.sort_by(f64::total_cmp);
        let median = finite.get(finite.len() / 2).copied().unwrap_or(0.0);
        let bound = OFF_SCALE * median.abs().max(1.0);
        let on_scale = || finite.iter().copied().filter(|v| v.abs() <= bound);
        let (lo, hi) = padded_range(on_scale(), 0.08);
        let off = finite.iter().filter(|v| v.abs() > bound);
        YAxis {
            lo,
            hi,
            off_scale: off.clone().count(),
            extreme: off
                .copied()
                .max_by(|a, b| a.abs().total_cmp(&b.abs()))
                .unwrap_or(0.0),
        }
    }

    /// Where a value is drawn: on the axis, or at its edge.
    fn place(&self, v: f64) -> f64 {
        v.clamp(self.lo, self.hi)
    }

    /// What the title says about the values off the scale.
    fn note(&self) -> Option<String> {
        (self.off_scale > 0).then(|| {
            format!(
                "{} value{} off the scale (to {:.2e}) at the edge",
                self.off_scale,
                if self.off_scale == 1 { "" } else { "s" },
                self.extreme
            )
        })
    }
}

/// Draws `plot` and writes it to `path` as a PNG (atomically).
pub fn write_png(plot: &Plot, path: &Path) -> Result<()> {
    register_font()?;
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(plot, &mut rgb).map_err(|e| Error::file(path, format!("drawing: {e}")))?;
    crate::io::write_atomic(path, |w| {
        let mut encoder = png::Encoder::new(w, WIDTH, HEIGHT);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Best);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&rgb)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
}

/// Lines with more points than this are drawn as the means and ranges of [`SLICES`] slices.
pub const DENSE: usize = 500;
/// The number of equal parts of the x range a dense line is drawn in.
pub const SLICES: usize = 300;

/// The points of one slice of the x range: mean x, and the mean, least and greatest y.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Slice {
    x: f64,
    mean: f64,
    min: f64,
    max: f64,
}

/// [`Slice`]s of `slices` equal parts of the x range of `points`, the empty ones left out.
fn slice_stats(points: &[(f64, f64)], slices: usize) -> Vec<Slice> {
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
    let width = (hi - lo) / slices as f64;
    let index = |x: f64| {
        if width > 0.0 {
            (((x - lo) / width) as usize).min(slices - 1)
        } else {
            0
        }
    };
    let mut acc = vec![(0.0, 0.0, 0usize, f64::INFINITY, f64::NEG_INFINITY); slices.max(1)];
    for &(x, y) in points {
        let a = &mut acc[index(x)];
        *a = (a.0 + x, a.1 + y, a.2 + 1, a.3.min(y), a.4.max(y));
    }
    acc.into_iter()
        .filter(|a| a.2 > 0)
        .map(|(x, y, n, min, max)| Slice {
            x: x / n as f64,
            mean: y / n as f64,
            min,
            max,
        })
        .collect()
}

/// A tick value without float noise or trailing zeros ("0.3", "1.5", "250"), in scientific
/// notation when the axis's largest magnitude `scale` is tiny or huge ("2.5e-4").
fn tick_label(v: f64, scale: f64) -> String {
    fn trim(s: &str) -> &str {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        }
    }
    if v == 0.0 || v.abs() < scale * 1e-9 {
        return "0".to_string();
    }
    if !(1e-3..1e6).contains(&scale) {
        let text = format!("{v:.2e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        return format!("{}e{exponent}", trim(mantissa));
    }
    trim(&format!("{v:.6}")).to_string()
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(plot: &Plot, rgb: &mut [u8]) -> DrawResult {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    // Points with a coordinate that is not a number cannot be drawn anywhere.
    let lines: Vec<Line> = plot
        .lines
        .iter()
        .map(|l| Line {
            points: l
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect(),
            ..l.clone()
        })
        .collect();
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let (x0, x1) = padded_range(all().map(|p| p.0).chain(plot.rules.iter().copied()), 0.02);
    let y_axis = YAxis::of(&all().map(|p| p.1).collect::<Vec<_>>());
    let (y0, y1) = (y_axis.lo, y_axis.hi);
    let lines: Vec<Line> = lines
        .into_iter()
        .map(|l| Line {
            points: l
                .points
                .iter()
                .map(|&(x, y)| (x.clamp(x0, x1), y_axis.place(y)))
                .collect(),
            ..l
        })
        .collect();
    let title = match y_axis.note() {
        Some(note) => format!("{} ({note})", plot.title),
        None => plot.title.clone(),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, (FAMILY, 24))
        .margin(16)
        .margin_right(36)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let scale = y0.abs().max(y1.abs());
    chart
        .configure_mesh()
        .x_desc(plot.x_label.as_str())
        .y_desc(plot.y_label.as_str())
        .x_label_formatter(&|x| tick_label(*x, x1.abs().max(x0.abs())))
        .y_label_formatter(&|y| tick_label(*y, scale))
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(243, 243, 243))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()?;
    for x in plot
        .rules
        .iter()
        .filter(|x| x.is_finite())
        .map(|x| x.clamp(x0, x1))
    {
        chart.draw_series(LineSeries::new(
            [(x, y0), (x, y1)],
            RGBColor(160, 160, 160).stroke_width(1),
        ))?;
    }
    for line in &lines {
        let style = line.color.stroke_width(2);
        // Dense lines: the range of each of equal slices of the x range as a pale band, and the
        // slices' means in bold (every record drawn would be a solid block of colour).
        let shown = if line.points.len() > DENSE {
            let slices = slice_stats(&line.points, SLICES);
            let band: Vec<(f64, f64)> = slices
                .iter()
                .map(|s| (s.x, s.max))
                .chain(slices.iter().rev().map(|s| (s.x, s.min)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(
                band,
                line.color.mix(0.25).filled(),
            )))?;
            slices.iter().map(|s| (s.x, s.mean)).collect()
        } else {
            line.points.clone()
        };
        // Wide lines as separate segments: plotters joins wide polylines with miters, which
        // shoot far out of the plot at sharp turns.
        let series = if line.dashed {
            chart.draw_series(DashedLineSeries::new(shown.iter().copied(), 8, 5, style))?
        } else {
            chart.draw_series(
                shown
                    .windows(2)
                    .map(|w| PathElement::new(vec![w[0], w[1]], style)),
            )?
        };
        // Markers when the points are few enough to tell apart (a lone point is otherwise
        // invisible): dots for the first metric of a plot, triangles for the dashed ones. The
        // legend shows what the plot shows.
        let markers = line.points.len() <= 60;
        let (dashed, lone, color) = (line.dashed, line.points.len() == 1, line.color);
        series.label(line.label.as_str()).legend(move |(x, y)| {
            let ink = |show: bool| if show { color.to_rgba() } else { TRANSPARENT };
            let (first_end, second_start) = if dashed { (8, 16) } else { (24, 0) };
            // Relative to (x, y): two segments (a line, or a dash pattern) and a marker.
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (first_end, 0)], ink(!lone).stroke_width(2))
                + PathElement::new(vec![(second_start, 0), (24, 0)], ink(!lone).stroke_width(2))
                + Circle::new((12, 0), 3, ink(markers && !dashed).filled())
                + TriangleMarker::new((12, 0), 5, ink(markers && dashed).filled())
        });
        if markers && dashed {
            let marker = |&p| TriangleMarker::new(p, 5, line.color.filled());
            chart.draw_series(line.points.iter().map(marker))?;
        } else if markers {
            let marker = |&p| Circle::new(p, 3, line.color.filled());
            chart.draw_series(line.points.iter().map(marker))?;
        }
    }
    chart
        .configure_series_labels()
        .position(if plot.legend_low {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FAMILY, 14))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.30000000000000004, 1.0), "0.3");
        assert_eq!(tick_label(250.0, 600.0), "250");
        assert_eq!(tick_label(-1e-17, 1.0), "0");
        assert_eq!(tick_label(2.5e-4, 3e-4), "2.5e-4");
        assert_eq!(tick_label(3e-4, 3e-4), "3e-4");
        assert_eq!(tick_label(1.5, 6.0), "1.5");
    }

    #[test]
    fn slices_average_their_points_and_keep_their_range() {
        let points: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, (i % 2) as f64)).collect();
        let slices = slice_stats(&points, 5);
        let means: Vec<(f64, f64)> = slices.iter().map(|s| (s.x, s.mean)).collect();
        assert_eq!(
            means,
            [(0.5, 0.5), (2.5, 0.5), (4.5, 0.5), (6.5, 0.5), (8.5, 0.5)]
        );
        assert!(slices.iter().all(|s| s.min == 0.0 && s.max == 1.0));
        let one = slice_stats(&[(3.0, 1.0)], 5);
        assert_eq!(
            one,
            [Slice {
                x: 3.0,
                mean: 1.0,
                min: 1.0,
                max: 1.0
            }]
        );
    }

    #[test]
    fn extreme_values_give_finite_drawable_ranges() {
        for values in [
            vec![1.7e308, 2.0, 3.0],
            vec![-1e308, 1.0, 1e308],
            vec![f64::MAX, f64::MIN],
            vec![1e16, 1e16 + 2.0],
            vec![5e-324, 0.0],
            vec![f64::NAN, f64::INFINITY, 1.0],
        ] {
            let (lo, hi) = padded_range(values.iter().copied(), 0.08);
            assert!(
                lo.is_finite() && hi.is_finite() && hi - lo > 0.0,
                "{values:?}"
            );
            assert!((hi - lo) >= lo.abs().max(hi.abs()) * 1e-6, "{values:?}");
        }
        let axis = YAxis::of(&[2.0, 3.0, 1.7e308, 2.5]);
        assert!(axis.hi < 4.0 && axis.lo > 1.0, "{axis:?}");
        assert_eq!((axis.off_scale, axis.extreme), (1, 1.7e308));
        assert_eq!(axis.place(1.7e308), axis.hi);
        assert!(axis.note().unwrap().contains("1 value off the scale"));
        // A metric that legitimately spans orders of magnitude stays whole.
        let staleness = YAxis::of(&[0.0, 0.0, 0.0, 50.0]);
        assert_eq!(staleness.off_scale, 0);
        assert!(staleness.hi > 50.0);
    }

    #[test]
    fn ranges_have_room_and_never_collapse() {
        assert_eq!(padded_range([2.0, 2.0].into_iter(), 0.1), (1.8, 2.2));
        assert_eq!(padded_range([0.0].into_iter(), 0.1), (-1.0, 1.0));
        assert_eq!(padded_range(std::iter::empty(), 0.1), (0.0, 1.0));
        let (lo, hi) = padded_range([0.0, 10.0].into_iter(), 0.1);
        assert!((lo + 1.0).abs() < 1e-12 && (hi - 11.0).abs() < 1e-12);
    }
}
