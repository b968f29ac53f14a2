//! PNG plots with plotters' bitmap backend; text through ab_glyph with DejaVu Sans from
//! fonts-dejavu-core (`cargo xtask setup` installs it), encoded with the png crate.

use std::path::Path;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use weir_lab::bench::plot::{self, COLOURS, pe};

use crate::control;
use crate::datapath;
use crate::e2e::{self, Mechanism};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 560;

/// [`weir_lab::bench::plot::render`] at this bench's size.
fn render(
    path: &Path,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    plot::render(path, (WIDTH, HEIGHT), draw)
}

type LevelValue = fn(&datapath::Level) -> f64;

/// ns per packet against installed services (log x), one line per path.
pub fn datapath(path: &Path, r: &datapath::Results) -> Result<()> {
    let series: [(&str, LevelValue); 5] = [
        ("new flow, random service", |l| l.new_spread),
        ("new flow, one service", |l| l.new_same),
        ("no-op, 1 run per call", |l| l.noop_single),
        ("established (amortised)", |l| l.established),
        ("no-op (amortised)", |l| l.noop_repeat),
    ];
    let max_y = r
        .levels
        .iter()
        .flat_map(|l| series.iter().map(move |(_, f)| f(l)))
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let max_x = r
        .levels
        .iter()
        .map(|l| l.services)
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "weir_from_pod per-packet cost (BPF_PROG_TEST_RUN)",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d((0.7f64..max_x * 1.5).log_scale(), 0f64..max_y * 1.15)
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("services installed (10 backends each)")
            .y_desc("ns per packet")
            .light_line_style(WHITE)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_label_formatter(&|x| {
                if *x >= 1000.0 {
                    format!("{:.0}k", x / 1000.0)
                } else {
                    format!("{x:.0}")
                }
            })
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(pe)?;
        for (i, (label, f)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<(f64, f64)> = r
                .levels
                .iter()
                .map(|l| (f64::from(l.services), f(l)))
                .filter(|(_, y)| y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(pe)?
                .label(*label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 4, colour.filled())))
                .map_err(pe)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(pe)?;
        Ok(())
    })
}

/// Two panels: connections per second and p99 latency, grouped by service count, one bar per
/// mechanism.
pub fn e2e(path: &Path, r: &e2e::Results) -> Result<()> {
    render(path, |root| {
        let title = format!(
            "Client pod -> 3-backend ClusterIP, {} concurrent connections, one request each",
            r.concurrency
        );
        let root = root.titled(&title, ("sans-serif", 20)).map_err(pe)?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        bars(&left, r, "new connections per second", |s| s.rate)?;
        bars(&right, r, "p99 latency (µs)", |s| s.p99_us)?;
        Ok(())
    })
}

fn bars(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    r: &e2e::Results,
    what: &str,
    value: fn(&e2e::Summary) -> f64,
) -> Result<()> {
    let groups = r.services.len().max(1);
    let max_y = r
        .services
        .iter()
        .flat_map(|n| {
            Mechanism::ALL
                .iter()
                .map(move |m| value(&r.summary(*m, *n)))
        })
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let labels: Vec<String> = r
        .services
        .iter()
        .map(|n| {
            if *n >= 1000 && n.is_multiple_of(1000) {
                format!("{}k services", n / 1000)
            } else {
                format!("{n} services")
            }
        })
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(what, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..groups as f64, 0f64..max_y * 1.25)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_labels(groups * 2 + 1)
        .x_label_formatter(&|x| {
            let g = x - 0.5;
            if (g - g.round()).abs() < 1e-6 && g >= 0.0 {
                labels.get(g.round() as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(pe)?;
    let width = 0.8 / Mechanism::ALL.len() as f64;
    for (i, mech) in Mechanism::ALL.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let rects: Vec<Rectangle<(f64, f64)>> = r
            .services
            .iter()
            .enumerate()
            .filter_map(|(g, n)| {
                let v = value(&r.summary(*mech, *n));
                v.is_finite().then(|| {
                    let x0 = g as f64 + 0.1 + i as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], colour.filled())
                })
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(pe)?
            .label(mech.label())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(pe)?;
    Ok(())
}

/// Cumulative distribution of endpoint-change latency.
pub fn control(path: &Path, r: &control::Results) -> Result<()> {
    let n = r.change_ms.len().max(1) as f64;
    // Room for the 100 ms target line even when every change was faster.
    let max_x = r.change_ms.last().copied().unwrap_or(1.0).max(110.0) * 1.1;
    render(path, |root| {
        let title = format!(
            "Endpoint change -> in the BPF map ({} services x {} endpoints, {} changes)",
            r.services,
            r.endpoints,
            r.change_ms.len()
        );
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..max_x, 0f64..100.0)
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms)")
            .y_desc("changes done (%)")
            .light_line_style(WHITE)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(pe)?;
        let mut points = vec![(0.0, 0.0)];
        for (i, ms) in r.change_ms.iter().enumerate() {
            points.push((*ms, i as f64 / n * 100.0));
            points.push((*ms, (i + 1) as f64 / n * 100.0));
        }
        chart
            .draw_series(LineSeries::new(points, COLOURS[0].stroke_width(2)))
            .map_err(pe)?;
        let grey = RGBColor(120, 120, 120);
        for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, p), (max_x, p)],
                    grey.stroke_width(1),
                ))
                .map_err(pe)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.to_string(),
                    (max_x * 0.01, p - 1.5),
                    ("sans-serif", 13).into_font().color(&grey),
                )))
                .map_err(pe)?;
        }
        // The target: p99 under 100 ms.
        let red = RGBColor(213, 94, 0);
        chart
            .draw_series(LineSeries::new(
                vec![(100.0, 0.0), (100.0, 100.0)],
                red.stroke_width(2),
            ))
            .map_err(pe)?;
        chart
            .draw_series(std::iter::once(Text::new(
                "target p99 < 100 ms".to_string(),
                (103.0, 8.0),
                ("sans-serif", 13).into_font().color(&red),
            )))
            .map_err(pe)?;
        Ok(())
    })
}
