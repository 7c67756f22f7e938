//! Big-JPEG benchmark (goal: a 4000×3000 JPEG end-to-end ≤ 2× a 500×375 one).
//!
//! Run: `cargo bench --bench big_jpeg` (optionally `-- --rounds 7 --iters 3 --threads 2`).
//! `-- --stages` instead times the stages of decoding the 4000×3000 photo (see [`stages`]).
//!
//! Makes two photo-like JPEGs (the `chelsea.jpg` fixture resized, with grain and a 4-pixel
//! texture, encoded 4:2:0 at quality 85 by `jpeg-encoder`), 4000×3000 and 500×375, and
//! measures, for each in both decode modes (default = reduced-DCT scaling for big JPEGs,
//! `exact` = `Limits::exact_jpeg`):
//! * `preprocess`: bytes → normalised 3×224×224 tensor (decode + resize + crop);
//! * `classify`: `Classifier::classify(bytes, 3)` on the synthetic weights (the above plus
//!   the forward and softmax), i.e. end-to-end minus HTTP.
//!
//! The four configurations are interleaved round by round so machine noise hits them
//! alike; the table shows medians over all rounds and the ratio of each 4000×3000 figure
//! to the 500×375 one in the same mode (the goal is ≤ 2.0× for `classify`, default mode).

use std::time::Instant;

use image::{ImageDecoder, RgbImage};
use jpeg_encoder::{ColorType, Encoder};
use resnet18_fc::classifier::Classifier;
use resnet18_fc::preprocess::{Limits, preprocess};
use resnet18_fc::synthetic::SyntheticWeights;

// The same pictures as tests/engine/preprocess_jpeg_scaled.rs.
#[path = "../tests/support/photo.rs"]
mod photo;
use photo::photo;

const SIZES: [(u32, u32); 2] = [(4000, 3000), (500, 375)];
const MODES: [(&str, bool); 2] = [("scaled", false), ("exact", true)];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = flag(&args, "--rounds").unwrap_or(5);
    let iters = flag(&args, "--iters").unwrap_or(3);
    if let Some(threads) = flag(&args, "--threads") {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .expect("rayon pool");
    }
    let files: Vec<Vec<u8>> = SIZES.iter().map(|&(w, h)| encode(&photo(w, h))).collect();
    if args.iter().any(|a| a == "--stages") {
        stages(&files[0], rounds * iters);
        return;
    }
    let classifiers: Vec<Classifier> = MODES
        .iter()
        .map(|&(_, exact_jpeg)| {
            let limits = Limits {
                exact_jpeg,
                ..Limits::default()
            };
            Classifier::from_source(&SyntheticWeights::generate(), "synthetic", limits)
                .expect("synthetic model")
        })
        .collect();
    // Warm-up: first forward, page faults, rayon threads.
    for c in &classifiers {
        for f in &files {
            c.classify(f, 3).expect("classifies");
        }
    }
    // samples[size][mode] = (preprocess ms, classify ms)
    let mut samples = vec![vec![(Vec::new(), Vec::new()); MODES.len()]; SIZES.len()];
    for round in 0..rounds {
        for (s, file) in files.iter().enumerate() {
            for (m, classifier) in classifiers.iter().enumerate() {
                for _ in 0..iters {
                    let started = Instant::now();
                    preprocess(file, classifier.limits()).expect("preprocesses");
                    samples[s][m].0.push(ms(started));
                    let started = Instant::now();
                    classifier.classify(file, 3).expect("classifies");
                    samples[s][m].1.push(ms(started));
                }
            }
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    print_table(&files, &mut samples, rounds, iters);
}

/// Where the time of a big JPEG goes, each stage timed `samples` times (interleaved) on
/// the same bytes: copying the body, reading the header and EXIF orientation, full
/// decodes by `image` (zune-jpeg) and `jpeg-decoder`, `jpeg-decoder` at 1/2, 1/4 and 1/8
/// (its 1/8 IDCT is a DC term only, so that row is almost all entropy decoding), and
/// `preprocess` (jpeg-decoder at the rule's scale, then resize and crop) with its own
/// decode / transform split.
fn stages(bytes: &[u8], samples: usize) {
    type Stage<'a> = (&'a str, Box<dyn Fn() -> f64 + 'a>);
    let jpeg_decoder = |d: u16| {
        timed(move || {
            let mut decoder = jpeg_decoder::Decoder::new(bytes);
            decoder.read_info().expect("header");
            let info = decoder.info().expect("info");
            decoder
                .scale(info.width.div_ceil(d), info.height.div_ceil(d))
                .expect("scale");
            std::hint::black_box(decoder.decode().expect("decodes"));
        })
    };
    let header = || {
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .expect("format");
        let mut decoder = reader.into_decoder().expect("decoder");
        std::hint::black_box((decoder.dimensions(), decoder.orientation().ok()));
    };
    let mut table: Vec<Stage<'_>> = vec![
        (
            "copy the body (Vec)",
            timed(|| drop(std::hint::black_box(bytes.to_vec()))),
        ),
        ("header + EXIF orientation (image)", timed(header)),
        (
            "full decode, image (zune-jpeg)",
            timed(|| drop(image::load_from_memory(bytes).expect("decodes"))),
        ),
    ];
    for (name, d) in [
        ("jpeg-decoder 1/1", 1u16),
        ("jpeg-decoder 1/2", 2),
        ("jpeg-decoder 1/4", 4),
        ("jpeg-decoder 1/8", 8),
    ] {
        table.push((name, jpeg_decoder(d)));
    }
    let mut splits = (Vec::new(), Vec::new());
    let mut totals = Vec::new();
    let mut results = vec![Vec::new(); table.len()];
    for _ in 0..samples {
        for (stage, out) in table.iter().zip(&mut results) {
            out.push((stage.1)());
        }
        let started = Instant::now();
        let p = preprocess(bytes, &Limits::default()).expect("preprocesses");
        totals.push(ms(started));
        splits.0.push(p.decode.as_secs_f64() * 1e3);
        splits.1.push(p.transform.as_secs_f64() * 1e3);
    }
    println!(
        "stages of a {} B 4000×3000 JPEG: medians of {samples}, interleaved",
        bytes.len()
    );
    println!("| stage | ms |");
    println!("|---|---|");
    for ((name, _), out) in table.iter().zip(&mut results) {
        println!("| {name} | {:.2} |", median(out));
    }
    println!(
        "| preprocess (scaled, default) | {:.2} |",
        median(&mut totals)
    );
    println!("| … of which decode | {:.2} |", median(&mut splits.0));
    println!(
        "| … of which resize + crop + normalise | {:.2} |",
        median(&mut splits.1)
    );
}

/// Wraps `f` so that calling it returns its duration in milliseconds.
fn timed<'a>(f: impl Fn() + 'a) -> Box<dyn Fn() -> f64 + 'a> {
    Box::new(move || {
        let started = Instant::now();
        f();
        ms(started)
    })
}

fn print_table(
    files: &[Vec<u8>],
    samples: &mut [Vec<(Vec<f64>, Vec<f64>)>],
    rounds: usize,
    iters: usize,
) {
    println!(
        "big_jpeg: medians of {} samples each, interleaved; rayon threads {}",
        rounds * iters,
        rayon::current_num_threads()
    );
    println!(
        "| image | file size | mode | preprocess | classify (end-to-end) | ratio to 500×375, same mode |"
    );
    println!("|---|---|---|---|---|---|");
    let medians: Vec<Vec<(f64, f64)>> = samples
        .iter_mut()
        .map(|per_mode| {
            per_mode
                .iter_mut()
                .map(|(p, c)| (median(p), median(c)))
                .collect()
        })
        .collect();
    for (s, &(w, h)) in SIZES.iter().enumerate() {
        for (m, &(mode, _)) in MODES.iter().enumerate() {
            let (pre, cls) = medians[s][m];
            let (base_pre, base_cls) = medians[SIZES.len() - 1][m];
            println!(
                "| {w}×{h} | {} KB | {mode} | {pre:.1} ms | {cls:.1} ms | {:.2}× preprocess, {:.2}× classify |",
                files[s].len() / 1024,
                pre / base_pre,
                cls / base_cls,
            );
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    let pos = args.iter().position(|a| a == name)?;
    args.get(pos + 1)?.parse().ok()
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn encode(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    let (w, h) = img.dimensions();
    Encoder::new(&mut out, 85)
        .encode(
            img.as_raw(),
            u16::try_from(w).expect("width"),
            u16::try_from(h).expect("height"),
            ColorType::Rgb,
        )
        .expect("encodes");
    out
}
